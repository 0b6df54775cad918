#!/usr/bin/env python3
"""Sink throughput against real receivers, each next to a baseline in the same run.

  webhook  zctl_bench_sink --plugin webhook (batches of --webhook-batch, default 500) POSTing to
           nginx (`return 200`, keep-alive); the target is an absolute rate (100 000 events/s).
  syslog   zctl_bench_sink --plugin syslog over TCP with octet counting to rsyslogd (imtcp ->
           omfile), against `logger --tcp --octet-count` sending the same event lines to the
           same rsyslogd, and against a raw socket writer replaying the exact frames the sink sent
           (recorded once by a plain listener); all timed from start until rsyslog has written
           every line.
  spool    zctl_bench_sink --plugin file, and webhook above, with and without `spool.dir`:
           what the spool costs.

Each figure is the median of --rounds rounds (the two sides of a comparison alternate within a
round). Prints a table, or JSON with --json. Exit 0 whenever the benchmark ran, 1 when it could
not (a missing program, a receiver that does not come up).

  scripts/setup.sh --bench          # nginx, rsyslog, bsdutils (logger)
  bench/sinks.py --build build      # about two minutes
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

EVENT_LINE = ('{"namespace":"connection","eventType":"stray","event_src_id":"bench-node",'
              '"timestamp":"2025-01-10T13:54:48.151522421-05:00","seq":%d,"remoteAddr":"10.20.1.2:51234",'
              '"localAddr":"10.0.0.1:6262","connectedAt":"2025-01-10T13:54:18.151522421-05:00",'
              '"pendingStep":"hello","protocolVersion":null,"nodeId":"ctrl-candidate-7","graceMs":30000,'
              '"action":"disconnect","bytesIn":0}')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_sink_bench(build, plugin, config, events, batch, spool=None):
    args = [os.path.join(build, "bin", "zctl_bench_sink"), "--plugin", plugin, "--config", json.dumps(config),
            "--events", str(events), "--batch", str(batch),
            "--plugin-dir", os.path.join(build, "lib", "zctl", "plugins")]
    if spool:
        args += ["--spool", spool]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"zctl_bench_sink {plugin} failed: {out.stderr.strip()[-500:]} {out.stdout.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def webhook(build, work, events, batch, rounds):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        raise RuntimeError("nginx is not installed (scripts/setup.sh --bench)")
    port = free_port()
    root = os.path.join(work, "nginx")
    os.makedirs(os.path.join(root, "logs"), exist_ok=True)
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {root}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  client_max_body_size 0;
  client_body_buffer_size 4m;
  keepalive_requests 10000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok"; }}
  }}
}}
""")
    proc = subprocess.Popen([nginx, "-p", root, "-c", conf, "-e", os.path.join(root, "logs", "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, "nginx")
        config = {"url": f"http://127.0.0.1:{port}/hook"}
        plain, spooled = [], []
        for _ in range(rounds):
            plain.append(run_sink_bench(build, "webhook", config, events, batch)["events_per_s"])
            spooled.append(run_sink_bench(build, "webhook", config, events, batch, os.path.join(work, "spool"))
                           ["events_per_s"])
    finally:
        stop(proc)
    return {"events": events, "batch": batch, "events_per_s": plain, "spooled_per_s": spooled,
            "spooled_ratio": [s / p for s, p in zip(spooled, plain)]}


class Rsyslog:
    def __init__(self, work):
        self.dir = os.path.join(work, "rsyslog")
        os.makedirs(os.path.join(self.dir, "work"), exist_ok=True)
        self.out = os.path.join(self.dir, "messages")
        self.port = free_port()
        self.conf = os.path.join(self.dir, "rsyslog.conf")
        with open(self.conf, "w") as f:
            f.write(f"""global(workDirectory="{self.dir}/work" maxMessageSize="64k")
module(load="imtcp")
template(name="msg" type="string" string="%msg%\\n")
input(type="imtcp" address="127.0.0.1" port="{self.port}")
*.* action(type="omfile" file="{self.out}" template="msg" asyncWriting="on" ioBufferSize="256k")
""")
        rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        self.proc = subprocess.Popen([rsyslogd, "-n", "-f", self.conf, "-i", os.path.join(self.dir, "pid")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "rsyslogd")

    def lines(self):
        # A fresh count each time: the file only grows during a run.
        try:
            with open(self.out, "rb") as f:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except FileNotFoundError:
            return 0

    def reset(self):
        if os.path.exists(self.out):
            os.unlink(self.out)
        self.proc.send_signal(signal.SIGHUP)  # reopen the output file
        time.sleep(0.2)

    def wait_lines(self, n, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.lines() >= n:
                return time.monotonic()
            time.sleep(0.02)
        raise RuntimeError(f"rsyslog wrote {self.lines()} of {n} lines")


def capture_syslog_stream(build, work, events):
    """The exact bytes the syslog sink sends for `events` events over TCP, recorded by a plain
    listener, so the raw baseline replays the same frames."""
    path = os.path.join(work, "syslog-stream")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    def record():
        conn, _ = listener.accept()
        with conn, open(path, "wb") as out:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                out.write(data)

    t = threading.Thread(target=record)
    t.start()
    run_sink_bench(build, "syslog", {"transport": "tcp", "address": f"127.0.0.1:{port}"}, events, 1000)
    t.join(timeout=60)
    listener.close()
    return path


def replay(path, port):
    with socket.create_connection(("127.0.0.1", port)) as s, open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            s.sendall(chunk)


def syslog(build, work, events, rounds):
    logger = shutil.which("logger")
    if not logger:
        raise RuntimeError("logger is not installed (bsdutils)")
    stream = capture_syslog_stream(build, work, events)
    r = Rsyslog(work)
    lines_path = os.path.join(work, "lines")
    with open(lines_path, "w") as f:
        for i in range(events):
            f.write(EVENT_LINE % (i + 1) + "\n")
    zctl, base, raw = [], [], []
    try:
        for _ in range(rounds):
            r.reset()
            start = time.monotonic()
            replay(stream, r.port)
            raw.append(events / (r.wait_lines(events) - start))
            r.reset()
            start = time.monotonic()
            run_sink_bench(build, "syslog", {"transport": "tcp", "address": f"127.0.0.1:{r.port}"}, events, 1000)
            zctl.append(events / (r.wait_lines(events) - start))
            r.reset()
            start = time.monotonic()
            with open(lines_path) as stdin:
                subprocess.run([logger, "--tcp", "--octet-count", "--rfc5424", "-n", "127.0.0.1", "-P", str(r.port),
                                "-t", "zctl"], stdin=stdin, check=True, timeout=600)
            base.append(events / (r.wait_lines(events) - start))
    finally:
        stop(r.proc)
    return {"events": events, "zctl_per_s": zctl, "raw_replay_per_s": raw, "logger_per_s": base,
            "ratio_raw": [z / b for z, b in zip(zctl, raw)], "ratio_logger": [z / b for z, b in zip(zctl, base)]}


def spool(build, work, events, rounds):
    path = os.path.join(work, "events.jsonl")
    without, with_spool = [], []
    for _ in range(rounds):
        for target, spool_dir in ((without, None), (with_spool, os.path.join(work, "spool"))):
            if os.path.exists(path):
                os.unlink(path)
            r = run_sink_bench(build, "file", {"path": path, "max_size_mb": 0}, events, 1000, spool_dir)
            target.append(r["events_per_s"])
    os.unlink(path)
    return {"events": events, "without_per_s": without, "with_per_s": with_spool,
            "ratio": [w / o for w, o in zip(with_spool, without)]}


def median(values):
    return statistics.median(values)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="build", help="the build directory (default: build)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--webhook-events", type=int, default=1000000)
    p.add_argument("--webhook-batch", type=int, default=500)
    p.add_argument("--syslog-events", type=int, default=200000)
    p.add_argument("--spool-events", type=int, default=1000000)
    p.add_argument("--only", choices=["webhook", "syslog", "spool"], action="append")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    only = set(args.only or ["webhook", "syslog", "spool"])
    results = {}
    with tempfile.TemporaryDirectory(prefix="zctl-bench-sinks-") as work:
        try:
            if "webhook" in only:
                results["webhook"] = webhook(args.build, work, args.webhook_events, args.webhook_batch, args.rounds)
            if "syslog" in only:
                results["syslog"] = syslog(args.build, work, args.syslog_events, args.rounds)
            if "spool" in only:
                results["spool"] = spool(args.build, work, args.spool_events, args.rounds)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            print(f"sinks.py: {e}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"load average {os.getloadavg()[0]:.1f}; medians of {args.rounds} rounds")
    if "webhook" in results:
        w = results["webhook"]
        rate = median(w["events_per_s"])
        print(f"webhook -> nginx, batches of {w['batch']}: {rate:,.0f} events/s "
              f"(target >= 100,000: {'met' if rate >= 100000 else 'NOT met'}); rounds "
              + ", ".join(f"{x:,.0f}" for x in w["events_per_s"]))
        print(f"  with a spool: {median(w['spooled_per_s']):,.0f} events/s, ratio {median(w['spooled_ratio']):.2f} "
              "(rounds " + ", ".join(f"{x:.2f}" for x in w["spooled_ratio"]) + ")")
    if "syslog" in results:
        s = results["syslog"]
        print(f"syslog TCP -> rsyslogd: zctl {median(s['zctl_per_s']):,.0f} events/s; raw writer of the same "
              f"frames {median(s['raw_replay_per_s']):,.0f}/s, ratio {median(s['ratio_raw']):.2f} (rounds "
              + ", ".join(f"{x:.2f}" for x in s["ratio_raw"]) + f"); logger {median(s['logger_per_s']):,.0f}/s, "
              f"ratio {median(s['ratio_logger']):.2f}")
    if "spool" in results:
        s = results["spool"]
        print(f"file sink with a spool: {median(s['with_per_s']):,.0f} events/s vs {median(s['without_per_s']):,.0f} "
              f"without, ratio {median(s['ratio']):.2f} (rounds " + ", ".join(f"{x:.2f}" for x in s["ratio"]) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
