#!/usr/bin/env python3
"""Kafka sink throughput against `kcat -P`: the same broker, the same key and value bytes.

For each round, each side against a fresh librdkafka mock cluster (tests/helpers/kafka_mock.cpp,
so neither inherits the other's stored messages):

  kcat   `kcat -P -K TAB -l FILE`: N lines of key `bench-node` and a stray-connection event as
         value, from a file in the page cache. Wall time of the process, start-up included.
  zctl   `zctl_bench_sink --plugin kafka`: N such events, built before the clock starts, offered
         to the real SinkHost (queue, batches of --batch, asynchronous completion), kafka.so
         producing them, until the host counted every one delivered, i.e. acknowledged by the
         broker. Key `{event_src_id}` = `bench-node` (the sink's default), the same value bytes
         (same length; only the timestamps differ). The sink is created before the clock starts;
         its connection and metadata requests run inside the timed part, as kcat's do.

Both use their defaults (acks=all, no compression). Each run is checked afterwards: the
topic's end offsets must add up to what was sent. kcat's start-up (process, connection,
metadata) is also timed alone, with one line, and reported.

    scripts/setup.sh --bench                # kcat and librdkafka (Debian packages)
    bench/kafka_bench.py --build build      # 3 rounds of 1 000 000 events, under a minute
    bench/kafka_bench.py --events 200000 --rounds 5 --batch 5000 --set linger.ms=1

The exit status is 0 when the benchmark ran (whatever the ratio), 1 when it could not.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


class Mock:
    """A fresh mock cluster: its bootstrap servers, stopped by pid."""

    def __init__(self, binary):
        self.proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.bootstrap = self.proc.stdout.readline().strip()
        if not self.bootstrap:
            self.stop()
            raise RuntimeError(f"{binary} printed no bootstrap servers")

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def end_offsets(kcat, bootstrap, topic):
    """Messages stored in the topic: the sum over partitions of (last offset + 1)."""
    out = subprocess.run([kcat, "-C", "-b", bootstrap, "-t", topic, "-o", "-1", "-e", "-q", "-J",
                          "-X", "fetch.wait.max.ms=10"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"kcat -C {topic}: {out.stderr.strip()}")
    return sum(json.loads(line)["offset"] + 1 for line in out.stdout.splitlines() if line.strip())


EVENT_LINE = ('bench-node\t{"namespace":"connection","eventType":"stray","event_src_id":"bench-node",'
              '"timestamp":"2025-01-10T13:54:48.151522421-05:00","seq":%d,"remoteAddr":"10.20.%d.%d:51234",'
              '"localAddr":"10.0.0.1:6262","connectedAt":"2025-01-10T13:54:18.151522421-05:00",'
              '"pendingStep":"hello","protocolVersion":null,"nodeId":"ctrl-candidate-7","graceMs":30000,'
              '"action":"disconnect","bytesIn":0}\n')


def write_lines(path, count):
    """kcat's input: what zctl_bench_sink offers (a pool of 4096 events, cycled), as key TAB value."""
    pool = [EVENT_LINE % (i, (i >> 8) & 255, i & 255) for i in range(1, 4097)]
    with open(path, "w") as f:
        for i in range(count):
            f.write(pool[i % len(pool)])
    return sum(len(line) - len("bench-node\t") - 1 for line in pool) / len(pool)


def run_kcat(args, lines, count):
    with Mock(args.mock) as mock:
        start = time.monotonic()
        proc = subprocess.run([args.kcat, "-P", "-b", mock.bootstrap, "-t", "bench.kcat", "-K", "\t", "-l", lines],
                              capture_output=True, text=True)
        seconds = time.monotonic() - start
        if proc.returncode != 0:
            raise RuntimeError(f"kcat -P exited {proc.returncode}: {proc.stderr.strip()}")
        stored = end_offsets(args.kcat, mock.bootstrap, "bench.kcat")
        if stored != count:
            raise RuntimeError(f"kcat: {stored} messages stored, {count} sent")
    return seconds


def run_zctl(args):
    with Mock(args.mock) as mock:
        config = {"brokers": mock.bootstrap, "topic": "bench.zctl"}
        if args.set:
            config["librdkafka"] = dict(p.split("=", 1) for p in args.set)
        cmd = [args.bench, "--plugin", "kafka", "--config", json.dumps(config), "--events", str(args.events),
               "--batch", str(args.batch), "--plugin-dir", os.path.join(args.build, "lib", "zctl", "plugins")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"zctl_bench_sink exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        stored = end_offsets(args.kcat, mock.bootstrap, "bench.zctl")
        if stored < args.events:
            raise RuntimeError(f"zctl: {stored} messages stored, {result['delivered']} delivered")
    return result["seconds"], stored - args.events


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.environ.get("ZCTL_BUILD_DIR", "build"), help="build directory (build)")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000, help="the sink's queue.batch_max (1000, the default)")
    ap.add_argument("--set", action="append", default=[], metavar="PROPERTY=VALUE",
                    help="a librdkafka property for the sink (its `librdkafka:` option); repeatable")
    ap.add_argument("--kcat", default=shutil.which("kcat") or "kcat")
    ap.add_argument("--json", action="store_true", help="print one JSON object with every round")
    args = ap.parse_args()
    args.bench = os.path.join(args.build, "bin", "zctl_bench_sink")
    args.mock = os.path.join(args.build, "bin", "zctl_kafka_mock")
    for path in (args.bench, args.mock, os.path.join(args.build, "lib", "zctl", "plugins", "kafka.so")):
        if not os.path.exists(path):
            print(f"missing {path}: build the project first (cmake --build {args.build})", file=sys.stderr)
            return 1
    if not shutil.which(args.kcat):
        print("kcat not found: scripts/setup.sh --bench", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="zctl-kafka-bench-") as tmp:
        lines, one = os.path.join(tmp, "events.tsv"), os.path.join(tmp, "one.tsv")
        size = write_lines(lines, args.events)
        write_lines(one, 1)
        try:
            startup = [run_kcat(args, one, 1) for _ in range(3)]
            kcat_times, zctl_times, duplicates = [], [], []
            for r in range(args.rounds):
                # Alternate which goes first, so a drift of the machine's load hits both alike.
                for which in (("kcat", "zctl") if r % 2 == 0 else ("zctl", "kcat")):
                    if which == "kcat":
                        kcat_times.append(run_kcat(args, lines, args.events))
                    else:
                        seconds, dup = run_zctl(args)
                        zctl_times.append(seconds)
                        duplicates.append(dup)
                print(f"round {r + 1}: kcat {kcat_times[-1]:.3f} s  zctl {zctl_times[-1]:.3f} s", file=sys.stderr)
        except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as e:
            print(f"benchmark failed: {e}", file=sys.stderr)
            return 1

    n = args.events
    kcat_s, zctl_s, start_s = statistics.median(kcat_times), statistics.median(zctl_times), statistics.median(startup)
    kcat_rate, kcat_net_rate, zctl_rate = n / kcat_s, n / max(kcat_s - start_s, 1e-9), n / zctl_s
    ratios = [k / z for k, z in zip(kcat_times, zctl_times)]
    if args.json:
        print(json.dumps({"events": n, "bytes_per_event": round(size), "rounds": args.rounds, "batch": args.batch,
                          "properties": args.set, "kcat_seconds": kcat_times, "zctl_seconds": zctl_times,
                          "kcat_startup_seconds": startup, "kcat_per_s": round(kcat_rate),
                          "kcat_net_per_s": round(kcat_net_rate), "zctl_per_s": round(zctl_rate),
                          "ratio": round(zctl_rate / kcat_rate, 3), "ratio_net": round(zctl_rate / kcat_net_rate, 3),
                          "round_ratios": [round(x, 3) for x in ratios], "duplicates": duplicates}))
        return 0
    print(f"events                    {n} ({size:.0f} bytes each), batches of {args.batch}, "
          f"medians of {args.rounds} rounds, a fresh broker for each run")
    print(f"kcat -P                   {kcat_s:.3f} s  {kcat_rate:,.0f} events/s")
    print(f"  without its start-up    {kcat_s - start_s:.3f} s  {kcat_net_rate:,.0f} events/s  "
          f"(start-up: {start_s * 1000:.0f} ms for one line)")
    print(f"zctl kafka sink           {zctl_s:.3f} s  {zctl_rate:,.0f} events/s")
    print(f"ratio zctl/kcat           {zctl_rate / kcat_rate:.2f}  (against kcat without start-up: "
          f"{zctl_rate / kcat_net_rate:.2f}; per round {', '.join(f'{x:.2f}' for x in ratios)}; target >= 0.9)")
    if any(duplicates):
        print(f"messages stored twice     {duplicates} (retried batches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
