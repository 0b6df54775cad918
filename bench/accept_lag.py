#!/usr/bin/env python3
"""How long after the client saw its connect complete does a server accept?

A diagnostic for the unpaced mesh flood (bench/mesh_flood.py), not a target.
Opens N idle connections against a server that is already running (a
`zctl serve` mesh port, or nginx), in mesh_flood.py's shape (512 in flight,
32 connects per loop turn), and stamps each completion on CLOCK_MONOTONIC. Meanwhile `perf record`
stamps each of the server's accept4() returns on the same clock. The kernel
queues connections in handshake order and accept() takes them in that order,
so the k-th accept is paired with the k-th completion seen by the client;
the difference, by tenth of the flood, is how long the server's end of the
handshake plus its accept lagged behind the client's end.

  bench/accept_lag.py --port PORT --pid PID [--connections 19900]

PID is the process (or nginx worker) that calls accept4(). Needs perf and
its syscalls tracepoints (root). The server must close the connections by
itself (a grace period or client_header_timeout); the script waits for that.
Exit status: 0 when it ran, 1 when it could not.
"""

import argparse
import os
import re
import shutil
import select
import socket
import subprocess
import sys
import tempfile
import time

# The flood's shape is mesh_flood.py's, so the two are measured alike.
from mesh_flood import CONNECT_WINDOW, IP_BIND_ADDRESS_NO_PORT, OPEN_BATCH, POLL_EVENTS

SOURCES = ["127.0.0.10", "127.0.0.11", "127.0.0.12"]


def flood(port, n, timeout_s):
    """Returns the client-seen completion times (CLOCK_MONOTONIC seconds)."""
    ep = select.epoll()
    socks, completed = {}, []
    opened = inflight = 0
    deadline = time.monotonic() + timeout_s
    while (socks or opened < n) and time.monotonic() < deadline:
        batch = OPEN_BATCH
        while opened < n and inflight < CONNECT_WINDOW and batch:
            batch -= 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((SOURCES[opened % len(SOURCES)], 0))
            s.connect_ex(("127.0.0.1", port))
            socks[s.fileno()] = [s, False]
            ep.register(s.fileno(), select.EPOLLOUT)
            opened += 1
            inflight += 1
        for fd, _ in ep.poll(0 if opened < n else 0.5, POLL_EVENTS):
            now = time.monotonic()
            entry = socks[fd]
            if not entry[1]:
                entry[1] = True
                inflight -= 1
                completed.append(now)
                ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)
            else:
                ep.unregister(fd)
                entry[0].close()
                del socks[fd]
    for entry in socks.values():
        entry[0].close()
    return completed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the process that calls accept4()")
    ap.add_argument("--connections", type=int, default=19900)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for every close")
    args = ap.parse_args()
    if not shutil.which("perf"):
        print("accept_lag: perf is not installed (scripts/setup.sh --bench)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        rec = subprocess.Popen(["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-e",
                                "syscalls:sys_exit_accept4", "-p", str(args.pid), "-o", data],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        completed = flood(args.port, args.connections, args.timeout)
        rec.send_signal(2)
        _, err = rec.communicate(timeout=30)
        script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True)
        if script.returncode != 0:
            print("accept_lag: perf failed: " + (err.decode() + script.stderr).strip(), file=sys.stderr)
            return 1
    accepts = sorted(float(m.group(1)) for m in
                     re.finditer(r"\s(\d+\.\d+):\s+syscalls:sys_exit_accept4: 0x([0-9a-f]+)", script.stdout)
                     if int(m.group(2), 16) < 0x80000000)
    completed.sort()
    n = min(len(accepts), len(completed))
    print(f"{len(completed)} connects completed, {len(accepts)} accepts traced")
    if n < 10:
        return 1
    lag = [(accepts[i] - completed[i]) * 1000 for i in range(n)]
    print("accept minus client-seen completion (ms), p50/p99 by tenth of the flood:")
    cells = []
    for k in range(10):
        seg = sorted(lag[k * n // 10:(k + 1) * n // 10])
        cells.append(f"{seg[len(seg) // 2]:.1f}/{seg[int(len(seg) * 0.99)]:.1f}")
    print("  " + " ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
