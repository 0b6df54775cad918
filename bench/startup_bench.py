#!/usr/bin/env python3
"""`zctl serve` start to /healthz 200, and idle memory.

Each run spawns a node on a fresh data dir and polls /healthz every 1 ms over
a raw socket. The named baseline in the same run is the cost of spawning a
process and seeing it exit (`zctl version`), so the machine's noise shows up
in both columns.

  bench/startup_bench.py [--zctl build/bin/zctl] [--runs 15]
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthz_ok(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.05) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zctl", default="build/bin/zctl")
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()

    starts, spawns, rss = [], [], []
    with tempfile.TemporaryDirectory(prefix="zctl-bench-start-") as tmp:
        for run in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run([args.zctl, "version"], stdout=subprocess.DEVNULL, check=True)
            spawns.append(time.perf_counter() - t0)

            port = free_port()
            t0 = time.perf_counter()
            proc = subprocess.Popen([args.zctl, "serve", "--id", f"b{run}", "--data-dir", f"{tmp}/b{run}",
                                     "--admin", f"127.0.0.1:{port}", "--mesh", "127.0.0.1:0"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                while not healthz_ok(port):
                    if proc.poll() is not None:
                        raise SystemExit(f"zctl serve exited with {proc.returncode}")
                    if time.perf_counter() - t0 > 10:
                        raise SystemExit("zctl serve not healthy within 10 s")
                    time.sleep(0.001)
                starts.append(time.perf_counter() - t0)
                time.sleep(0.2)
                rss.append(rss_kib(proc.pid))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)

    ms = lambda xs: statistics.median(xs) * 1000
    print(f"runs                      {args.runs}")
    print(f"baseline spawn+exit       median {ms(spawns):.1f} ms  (zctl version)")
    print(f"serve start to /healthz   median {ms(starts):.1f} ms  max {max(starts) * 1000:.1f} ms")
    print(f"idle RSS                  median {statistics.median(rss) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
