#!/usr/bin/env python3
"""Idle-connection flood against the mesh port, with nginx as the baseline.

Flood: N TCP connections that never send a byte, against a `zctl serve` node
with mesh.stray.grace_period 2s and then against nginx with
client_header_timeout 2s (the same client, the same machine, one after the
other). Per server: accept rate, user-space memory per pending connection
(VmRSS delta of the server process / N), how late after the grace period each
connection is closed (seen by the client: from connect completion to EOF or
RST, minus the grace period) and how many were closed.

Isolation: latency of a full join (connect, hello, hello_ack, join,
accepted; man/zctl-protocol.7) on an idle node, then while N idle
connections are pending on the same kind of node. nginx gets the same with a
plain `GET /` as its reference.

One process, one epoll loop, non-blocking sockets, time.monotonic_ns().
Timestamps are taken once per epoll_wait() return, for every server alike.
Every series runs against a freshly started server on its own temp dir; the
servers are stopped by pid. The whole set is repeated --rounds times; the
tables show medians. See bench/README-mesh.md for what each figure means.

  bench/mesh_flood.py [--zctl build/bin/zctl] [--connections 20000] [--grace 2s]
                      [--joins 200] [--rounds 3] [--rate 0] [--skip-nginx] [--json]

Exit status: 0 when the benchmark ran (whatever the targets say), 1 when it
could not run, 2 on a usage error.
"""

import argparse
import errno
import json
import math
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

# Linux constants the socket module may not export.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
TCP_LISTEN = 10

EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLERR, EPOLLHUP, EPOLLRDHUP = select.EPOLLERR, select.EPOLLHUP, select.EPOLLRDHUP

CONNECT_WINDOW = 512       # flood connects in flight at once (SYN sent, not yet established)
OPEN_BATCH = 32            # connects issued between two epoll_wait() calls, so that a
                           # completion is stamped at most ~1 ms late
FD_RESERVE_SERVER = 100    # descriptors a server needs besides the flood's
FD_RESERVE_CLIENT = 32     # and this script
POLL_EVENTS = 64           # events handled per epoll_wait(): bounds how late the next
                           # batch is stamped
REQUEST_TIMEOUT_NS = 10 * 10**9
MAX_WAVES = 10
WARMUP_REQUESTS = 10       # before each series, not counted (first-use costs on both sides)


class BenchError(Exception):
    """The benchmark cannot run (as opposed to a target being missed)."""


# ---------------------------------------------------------------------------
# small helpers

def parse_duration_ms(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration like 500ms, 2s or 1m, got '{text}'")
    value = float(m.group(1)) * {"ms": 1, "s": 1000, "m": 60000, "h": 3600000}[m.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError("the grace period must be longer than 0s")
    return value


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+)", f.read())
    return int(m.group(1)) if m else 0


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def read_int(path):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return None


def tcp_ext_counters():
    """ListenOverflows and ListenDrops from /proc/net/netstat (whole host)."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            d = dict(zip(names.split()[1:], (int(v) for v in values.split()[1:])))
            return {k: d.get(k, 0) for k in ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop",
                                            "TCPReqQFullDoCookies")}
    return {}


def pct(sorted_xs, p):
    if not sorted_xs:
        return None
    return sorted_xs[max(0, math.ceil(p / 100 * len(sorted_xs)) - 1)]


def summary_ms(values_ns):
    xs = sorted(values_ns)
    if not xs:
        return {"count": 0}
    ms = lambda v: round(v / 1e6, 3)
    return {"count": len(xs), "min": ms(xs[0]), "p50": ms(pct(xs, 50)), "p99": ms(pct(xs, 99)),
            "max": ms(xs[-1])}


class ListenDiag:
    """Accept-queue length and backlog of a listening TCP socket, by port, via sock_diag.

    Polling it costs one netlink round trip and no connection, so it tells when a
    server has accepted everything the kernel queued for it without touching the
    server."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        self.seq = 0

    def close(self):
        self.sock.close()

    def query(self, port):
        """(accept queue length, backlog) of the IPv4 listener on `port`, or None."""
        self.seq += 1
        req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN) + bytes(48)
        hdr = struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, 0x301, self.seq, 0)
        self.sock.send(hdr + req)
        found = None
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _, seq, _ = struct.unpack_from("=IHHII", data, off)
                if mtype == 3 or mtype == 2:  # NLMSG_DONE, NLMSG_ERROR
                    return found
                if mtype == SOCK_DIAG_BY_FAMILY and seq == self.seq:
                    sport = struct.unpack_from("!H", data, off + 16 + 4)[0]
                    if sport == port:
                        rqueue, wqueue = struct.unpack_from("=II", data, off + 16 + 56)
                        found = (rqueue, wqueue)
                off += (length + 3) & ~3

    def wait_listening(self, port, timeout_s, proc=None):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.query(port) is not None:
                return True
            if proc is not None and proc.poll() is not None:
                return False
            time.sleep(0.01)
        return False


# ---------------------------------------------------------------------------
# the mesh protocol, client side (man/zctl-protocol.7)

MAGIC = b"ZCTL"
T_HELLO, T_HELLO_ACK, T_JOIN, T_ACCEPTED, T_REJECTED, T_VERSIONS, T_REDIRECT = 1, 2, 3, 4, 5, 6, 9


def mstr(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def frame(version, mtype, body):
    return MAGIC + struct.pack("!BBHI", version, mtype, 0, len(body)) + body


def hello_frame(node_id, cluster_id):
    return frame(1, T_HELLO, struct.pack("!BB", 1, 1) + mstr(node_id) + mstr(cluster_id))


def join_frame(version, raft_addr, token):
    return frame(version, T_JOIN, mstr(raft_addr) + mstr(token))


class Body:
    def __init__(self, data):
        self.data, self.off = data, 0

    def u8(self):
        self.off += 1
        return self.data[self.off - 1]

    def u16(self):
        self.off += 2
        return struct.unpack_from("!H", self.data, self.off - 2)[0]

    def str(self):
        n = self.u16()
        if self.off + n > len(self.data):
            raise ValueError("string past the end of the body")
        self.off += n
        return self.data[self.off - n:self.off].decode()

    def end(self):
        if self.off != len(self.data):
            raise ValueError(f"{len(self.data) - self.off} bytes left over")


def take_frame(buf):
    """(version, type, body, rest) when buf holds a whole frame, else None."""
    if len(buf) < 12:
        return None
    if buf[:4] != MAGIC:
        raise ValueError(f"bad magic {bytes(buf[:4])!r}")
    version, mtype, flags, length = struct.unpack_from("!BBHI", buf, 4)
    if flags or length > 1 << 20:
        raise ValueError(f"bad header flags={flags} length={length}")
    if len(buf) < 12 + length:
        return None
    return version, mtype, bytes(buf[12:12 + length]), buf[12 + length:]


def refusal(mtype, body):
    b = Body(body)
    try:
        if mtype == T_REJECTED:
            return f"rejected {b.str()}"
        if mtype == T_REDIRECT:
            return f"redirect to {b.str()}"
        if mtype == T_VERSIONS:
            return f"versions {list(body[1:])}"
    except (ValueError, IndexError, UnicodeDecodeError):
        pass
    return f"unexpected message type {mtype}"


# ---------------------------------------------------------------------------
# sequential requests (joins or HTTP GETs) driven by the shared epoll loop

class Requester:
    """Runs one request at a time on the loop; subclasses speak the protocol."""

    name = "request"

    def __init__(self, target, source):
        self.target, self.source = target, source
        self.sock = None
        self.state = None
        self.buf = bytearray()
        self.t_start = 0
        self.results = []   # (latency_ns, ok, detail, tag)
        self.tag = None

    def start(self, ep, tag):
        self.tag = tag
        self.buf = bytearray()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((self.source, 0))
        self.t_start = time.monotonic_ns()
        err = s.connect_ex(self.target)
        self.sock = s
        if err not in (0, errno.EINPROGRESS):
            self.finish(ep, self.t_start, False, f"connect: {os.strerror(err)}")
            return None
        self.state = "connecting"
        ep.register(s.fileno(), EPOLLOUT)
        return s.fileno()

    def finish(self, ep, now, ok, detail):
        self.results.append((now - self.t_start, ok, detail, self.tag))
        if self.sock is not None:
            try:
                ep.unregister(self.sock.fileno())
            except (OSError, ValueError):
                pass
            self.sock.close()
        self.sock = None
        self.state = None

    def busy(self):
        return self.sock is not None

    def check_timeout(self, ep, now):
        if self.sock is not None and now - self.t_start > REQUEST_TIMEOUT_NS:
            self.finish(ep, now, False, f"no answer within {REQUEST_TIMEOUT_NS // 10**9} s in state {self.state}")

    def on_event(self, ep, ev, now):
        if self.state == "connecting":
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.finish(ep, now, False, f"connect: {os.strerror(err)}")
                return
            ep.modify(self.sock.fileno(), EPOLLIN | EPOLLRDHUP)
            try:
                self.connected(ep, now)
            except OSError as e:
                self.finish(ep, now, False, f"send: {e.strerror or e}")
            return
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BlockingIOError) as e:
            if isinstance(e, BlockingIOError):
                return
            data = None
        if not data:
            self.finish(ep, now, False, f"closed by the server in state {self.state}")
            return
        self.buf += data
        try:
            self.received(ep, now)
        except (ValueError, IndexError, UnicodeDecodeError) as e:
            self.finish(ep, now, False, f"bad answer: {e}")
        except OSError as e:
            self.finish(ep, now, False, f"send: {e.strerror or e}")

    def send(self, data):
        if self.sock.send(data) != len(data):
            raise ValueError("short send")


class JoinRequester(Requester):
    """connect -> hello -> hello_ack -> join -> accepted, then close."""

    name = "join"

    def __init__(self, target, source, cluster_id, token, id_prefix):
        super().__init__(target, source)
        self.cluster_id, self.token, self.id_prefix = cluster_id, token, id_prefix
        self.counter = 0
        self.version = 1

    def connected(self, ep, now):
        self.counter += 1
        self.send(hello_frame(f"{self.id_prefix}{self.counter}", self.cluster_id))
        self.state = "hello"

    def received(self, ep, now):
        while self.sock is not None:
            got = take_frame(self.buf)
            if got is None:
                return
            _, mtype, body, self.buf = got
            if self.state == "hello" and mtype == T_HELLO_ACK:
                b = Body(body)
                self.version = b.u8()
                b.str(), b.str(), b.end()
                self.send(join_frame(self.version, "127.0.0.1:1", self.token))
                self.state = "join"
            elif self.state == "join" and mtype == T_ACCEPTED:
                b = Body(body)
                b.str()
                for _ in range(b.u16()):
                    b.str(), b.str(), b.str(), b.u8()
                b.end()
                self.finish(ep, now, True, "accepted")
            else:
                self.finish(ep, now, False, f"after {self.state}: {refusal(mtype, body)}")


class HttpRequester(Requester):
    """connect -> GET / -> a whole 200 response, then close (nginx's reference)."""

    name = "GET /"

    def connected(self, ep, now):
        self.send(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        self.state = "response"

    def received(self, ep, now):
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).decode("latin-1")
        m = re.search(r"(?im)^content-length:\s*(\d+)", head)
        if m and len(self.buf) < end + 4 + int(m.group(1)):
            return
        ok = head.startswith("HTTP/1.1 200")
        self.finish(ep, now, ok, "200" if ok else head.splitlines()[0])


# ---------------------------------------------------------------------------
# the flood

class Loop:
    """One epoll loop for the flood and the requester."""

    def __init__(self, sources, fd_limit):
        self.sources = sources
        self.ep = select.epoll()
        self.diag = ListenDiag()
        self.size = fd_limit + 16

    def close(self):
        self.ep.close()
        self.diag.close()

    def wave(self, target, n, grace_ns, rss_pid=None, requester=None, requests=0, extra_wait_s=5.0, rate=0):
        """Opens n idle connections, waits until the server closes them all (or
        until grace + extra_wait_s after the last one was established) and, with a
        requester, runs requests back to back once all n are accepted.
        Requests that end before the server closed any flood connection are tagged
        "pending", later ones "closing"; no new request starts once `requests`
        "pending" ones are done and the flood is over. rate > 0 paces the
        connects (per second); 0 opens them as fast as the server takes them."""
        ep, mono = self.ep, time.monotonic_ns
        size = self.size
        socks = [None] * size
        state = bytearray(size)          # 1 connecting, 2 open
        t_start = [0] * size
        t_est = [0] * size
        order = [0] * size               # rank of the connection by establishment
        connect_ns, lifetimes = [], []
        ends = {"eof": 0, "rst": 0, "data": 0}
        failures = {}
        sources, nsrc = self.sources, len(self.sources)
        opened = inflight = established = ended = failed = 0
        before_grace = 0                 # closed sooner than the grace period after connect() was called
        t_first_end = t_last_end = t_first_est = None
        t_all_est = t_all_accepted = None
        last_est = 0
        rss_all = None
        rss_peak = 0
        next_rss = 0
        req_fd = -1
        pending_done = closing_done = 0
        counters_before = tcp_ext_counters()
        port = target[1]

        t0 = mono()
        if n == 0:
            t_all_est = t_all_accepted = t0
        while True:
            batch = OPEN_BATCH
            if rate and opened < n:
                batch = max(0, min(batch, int((mono() - t0) * rate / 1e9) + 1 - opened))
            while opened < n and inflight < CONNECT_WINDOW and batch:
                batch -= 1
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((sources[opened % nsrc], 0))
                fd = s.fileno()
                t_start[fd] = mono()
                err = s.connect_ex(target)
                opened += 1
                if err not in (0, errno.EINPROGRESS):
                    failures[os.strerror(err)] = failures.get(os.strerror(err), 0) + 1
                    failed += 1
                    s.close()
                    continue
                socks[fd] = s
                state[fd] = 1
                inflight += 1
                ep.register(fd, EPOLLOUT)

            if opened < n and inflight < CONNECT_WINDOW:
                timeout = 0.0005 if rate else 0
            elif t_all_est is None:
                timeout = 1.0
            elif t_all_accepted is None:
                timeout = 0.001     # polling the accept queue
            else:
                timeout = 0.05
            evs = ep.poll(timeout, POLL_EVENTS)
            now = mono()
            for fd, ev in evs:
                st = state[fd]
                if st == 2:
                    s = socks[fd]
                    try:
                        kind = "data" if s.recv(256) else "eof"
                    except ConnectionResetError:
                        kind = "rst"
                    except BlockingIOError:
                        continue
                    lifetimes.append((order[fd], now - t_est[fd]))
                    if now - t_start[fd] < grace_ns:
                        before_grace += 1
                    ends[kind] += 1
                    s.close()
                    socks[fd] = None
                    state[fd] = 0
                    ended += 1
                    if t_first_end is None:
                        t_first_end = now
                    t_last_end = now
                elif st == 1:
                    inflight -= 1
                    s = socks[fd]
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        failures[os.strerror(err)] = failures.get(os.strerror(err), 0) + 1
                        failed += 1
                        s.close()
                        socks[fd] = None
                        state[fd] = 0
                        continue
                    t_est[fd] = now
                    order[fd] = established
                    last_est = now
                    if t_first_est is None:
                        t_first_est = now
                    connect_ns.append(now - t_start[fd])
                    established += 1
                    state[fd] = 2
                    ep.modify(fd, EPOLLIN | EPOLLRDHUP)
                elif fd == req_fd:
                    requester.on_event(ep, ev, now)

            if t_all_est is None and established + failed == n:
                t_all_est = now
            if t_all_est is not None and t_all_accepted is None:
                q = self.diag.query(port) if n else (0, 0)
                if q is None or q[0] == 0:
                    t_all_accepted = mono()
                    if rss_pid:
                        rss_all = rss_kib(rss_pid)
                        rss_peak = max(rss_peak, rss_all)
            if rss_pid and now >= next_rss:
                rss = rss_kib(rss_pid)
                rss_peak = max(rss_peak, rss)
                if t_all_accepted is not None and t_first_end is None:
                    rss_all = max(rss_all, rss)     # all n pending, nothing closed yet
                next_rss = now + 100_000_000

            flood_over = ended + failed >= n
            if requester is not None and t_all_accepted is not None:
                if req_fd >= 0:
                    requester.check_timeout(ep, now)
                    if not requester.busy():
                        req_fd = -1
                        last = requester.results[-1]
                        if t_first_end is not None:
                            requester.results[-1] = last[:3] + ("closing",)
                            closing_done += 1
                        else:
                            pending_done += 1
                if req_fd < 0:
                    if n == 0:
                        go = pending_done < requests
                    else:
                        go = not flood_over and (pending_done < requests if t_first_end is None
                                                 else closing_done < requests)
                    if go:
                        fd = requester.start(ep, "pending" if t_first_end is None else "closing")
                        if fd is not None:
                            req_fd = fd
                        elif t_first_end is None:
                            pending_done += 1
                        else:
                            closing_done += 1

            if n == 0:
                if requester is None or (req_fd < 0 and pending_done >= requests):
                    break
            elif flood_over and req_fd < 0:
                break
            elif t_all_est is not None and established and \
                    now > last_est + grace_ns + int(extra_wait_s * 1e9):
                break
            elif t_all_est is None and opened == n and now - t0 > 60 * 10**9:
                break   # connects stuck for a minute

        not_closed = 0
        for fd in range(size):
            if socks[fd] is not None:
                if state[fd] == 2:
                    not_closed += 1
                else:
                    failures["connect never completed"] = failures.get("connect never completed", 0) + 1
                socks[fd].close()
        if requester is not None and requester.busy():
            requester.finish(ep, mono(), False, "flood ended")
        counters_after = tcp_ext_counters()
        return {
            "opened": opened, "established": established, "connect_failed": failed,
            "failures": failures, "not_closed": not_closed, "closed": ended, "ends": ends,
            "closed_before_grace": before_grace,
            "all_established_s": (t_all_est - t0) / 1e9 if t_all_est else None,
            "all_accepted_s": (t_all_accepted - t0) / 1e9 if t_all_accepted else None,
            "first_close_after_all_accepted_s":
                (t_first_end - t_all_accepted) / 1e9 if t_first_end and t_all_accepted else None,
            "connect_ms": summary_ms(connect_ns),
            "lateness_ns": [(i, x - grace_ns) for i, x in lifetimes],
            "established_span_s": (last_est - t_first_est) / 1e9 if t_first_est else None,
            "close_span_s": (t_last_end - t_first_end) / 1e9 if t_first_end else None,
            "rss_all_kib": rss_all, "rss_peak_kib": rss_peak,   # rss_all: the most seen while all were pending
            "listen_counters": {k: counters_after.get(k, 0) - v for k, v in counters_before.items()},
        }


# ---------------------------------------------------------------------------
# the servers

class Server:
    label = "server"

    def __init__(self, tmp, name):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.proc = None
        self.port = None
        self.stderr = None

    def rss_pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None


class ZctlNode(Server):
    label = "zctl serve"

    def __init__(self, tmp, name, zctl, grace, token_file, cluster_id):
        super().__init__(tmp, name)
        self.zctl = os.path.abspath(zctl)
        self.port = free_port()
        self.admin_port = free_port()
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.events_path = os.path.join(self.dir, "events.jsonl")
        self.config = os.path.join(self.dir, "zctl.yaml")
        with open(self.config, "w") as f:
            f.write(f"""node: {{ id: bench1, data_dir: {self.dir}/data }}
mesh:
  listen: 127.0.0.1:{self.port}
  max_pending: 30000
  max_pending_per_source: 30000
  join_token_file: {token_file}
  stray: {{ grace_period: {grace}, action: disconnect, log_level: warn }}
  flood: {{ window: 10s, max_connections_per_source: 1000000 }}
cluster: {{ id: {cluster_id}, raft_listen: 127.0.0.1:{free_port()} }}
admin: {{ listen: 127.0.0.1:{self.admin_port} }}
sinks: [ {{ name: events, plugin: file, config: {{ path: {self.events_path} }} }} ]
""")
        self.cluster_id = cluster_id

    def check_config(self):
        r = subprocess.run([self.zctl, "config", "check", self.config], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"zctl config check {self.config} failed:\n{r.stdout}{r.stderr}")

    def start(self, diag):
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([self.zctl, "serve", "--config", self.config], stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, cwd=self.dir)
        t0 = time.monotonic()
        while not self.healthz():
            if self.proc.poll() is not None or time.monotonic() - t0 > 15:
                raise BenchError(f"zctl serve did not come up (exit {self.proc.poll()}); stderr:\n"
                                 + tail(self.stderr_path))
            time.sleep(0.01)
        if not diag.wait_listening(self.port, 15, self.proc):
            raise BenchError(f"zctl serve is healthy but nothing listens on its mesh port {self.port} "
                             "(does this build have the mesh listener?); stderr:\n" + tail(self.stderr_path))
        # Ready: it leads its one-node cluster with a validated leader, so the
        # start-up's elections and disk syncs are over before anything is timed.
        while not self.http_get("/readyz").startswith("HTTP/1.1 200"):
            if self.proc.poll() is not None or time.monotonic() - t0 > 30:
                raise BenchError("zctl serve did not become ready; stderr:\n" + tail(self.stderr_path))
            time.sleep(0.01)

    def http_get(self, path):
        try:
            with socket.create_connection(("127.0.0.1", self.admin_port), timeout=2) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                chunks = []
                while True:
                    c = s.recv(65536)
                    if not c:
                        break
                    chunks.append(c)
                return b"".join(chunks).decode("utf-8", "replace")
        except OSError:
            return ""

    def healthz(self):
        return self.http_get("/healthz").startswith("HTTP/1.1 200")

    def metrics(self):
        """The mesh-related series of /metrics, as {series: value}."""
        out = {}
        for line in self.http_get("/metrics").splitlines():
            if line.startswith(("controller_stray", "controller_mesh", "controller_connection_rejections",
                                "controller_protocol_errors", "controller_sink_events_total",
                                "controller_events_total{namespace=\"connection\"")):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out

    def log_lines(self):
        return count_lines(self.stderr_path)

    def stray_events(self):
        try:
            with open(self.events_path, errors="replace") as f:
                return sum(1 for line in f if '"eventType":"stray"' in line)
        except OSError:
            return 0

    def version(self):
        r = subprocess.run([self.zctl, "--version"], capture_output=True, text=True)
        return (r.stdout or r.stderr).strip().splitlines()[0] if r.returncode == 0 else "?"


class Nginx(Server):
    label = "nginx"

    def __init__(self, tmp, name, nginx, grace_ms, nofile, connections, backlog):
        super().__init__(tmp, name)
        self.nginx = nginx
        self.port = free_port()
        self.error_log = os.path.join(self.dir, "error.log")
        self.pid_file = os.path.join(self.dir, "nginx.pid")
        self.config = os.path.join(self.dir, "nginx.conf")
        d = self.dir
        # error_log at info: nginx then writes one line per connection it times out,
        # as the node does per stray. worker_connections leaves more than 1/16 of
        # the connections free: below that nginx closes idle "reusable" connections
        # (those still waiting for a request) early to make room.
        with open(self.config, "w") as f:
            f.write(f"""worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
pid {self.pid_file};
error_log {self.error_log} info;
events {{
    worker_connections {max(21000, math.ceil(connections * 1.25))};
    use epoll;
}}
http {{
    access_log off;
    client_header_timeout {int(grace_ms)}ms;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{self.port} backlog={backlog};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
        self.worker = None

    def start(self, diag):
        self.stderr = open(os.path.join(self.dir, "stderr.log"), "w")
        self.proc = subprocess.Popen([self.nginx, "-p", self.dir, "-c", self.config, "-e", self.error_log],
                                     stdout=subprocess.DEVNULL, stderr=self.stderr)
        if not diag.wait_listening(self.port, 15, self.proc):
            raise BenchError(f"nginx did not come up (exit {self.proc.poll()}); error log:\n" + tail(self.error_log))
        t0 = time.monotonic()
        while self.worker is None and time.monotonic() - t0 < 10:
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    kids = f.read().split()
                self.worker = int(kids[0]) if kids else None
            except OSError:
                self.worker = self.worker_by_scan()
            time.sleep(0.01)
        if self.worker is None:
            raise BenchError("cannot find the nginx worker process")

    def worker_by_scan(self):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                            return int(entry)
                except (OSError, IndexError, ValueError):
                    pass
        return None

    def rss_pid(self):
        return self.worker

    def log_lines(self):
        return count_lines(self.error_log)

    def version(self):
        r = subprocess.run([self.nginx, "-v"], capture_output=True, text=True)
        return (r.stderr or r.stdout).strip().replace("nginx version: ", "")


def count_lines(path):
    """(number of lines, the lines) of a log file; (0, []) when it cannot be read."""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0, []
    return len(lines), lines


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


# ---------------------------------------------------------------------------
# phases

def settle(pid, seconds=1.0):
    """Waits for the RSS to stop moving (start-up allocations), then returns it."""
    time.sleep(seconds)
    prev = rss_kib(pid)
    for _ in range(20):
        time.sleep(0.1)
        cur = rss_kib(pid)
        if cur == prev:
            return cur
        prev = cur
    return prev


def cpu_ms(pid):
    """User + system CPU time of a process, all its threads, in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def flood_phase(loop, server, n, grace_ns, rate):
    diag_before = loop.diag.query(server.port)
    fds_before = fd_count(server.rss_pid())
    rss_before = settle(server.rss_pid())
    logs_before = server.log_lines()[0]
    cpu_before = cpu_ms(server.rss_pid())
    w = loop.wave(("127.0.0.1", server.port), n, grace_ns, rss_pid=server.rss_pid(), rate=rate)
    cpu_flood = cpu_ms(server.rss_pid()) - cpu_before
    time.sleep(1.0)
    rss_after = rss_kib(server.rss_pid())
    by_order = w.pop("lateness_ns")
    late = sorted(x for _, x in by_order)
    by_order.sort()
    tenths = [sorted(x for _, x in by_order[i * len(by_order) // 10:(i + 1) * len(by_order) // 10])
              for i in range(10)] if len(by_order) >= 10 else []
    res = {
        "server": server.label,
        "listen_backlog": diag_before[1] if diag_before else None,
        "fds_idle": fds_before,
        **w,
        "accept_rate_per_s": round(n / w["all_accepted_s"]) if w["all_accepted_s"] else None,
        "rss_before_kib": rss_before,
        "rss_1s_after_kib": rss_after,
        "bytes_per_pending": round((w["rss_all_kib"] - rss_before) * 1024 / n) if w["rss_all_kib"] else None,
        "lateness_ms": summary_ms(late),
        "lateness_p50_ms_by_tenth": [round(pct(t, 50) / 1e6, 1) for t in tenths],
        "server_cpu_ms": round(cpu_flood),
        "close_rate_per_s": round(w["closed"] / w["close_span_s"]) if w["close_span_s"] else None,
        "closed_early": sum(1 for x in late if x < -1_000_000),
        "log_lines": server.log_lines()[0] - logs_before,
    }
    if isinstance(server, ZctlNode):
        time.sleep(0.5)
        res["stray_events_in_sink"] = server.stray_events()
        res["metrics"] = server.metrics()
        _, lines = server.log_lines()
        res["log_sample"] = lines[logs_before:logs_before + 2]
        res["log_not_stray"] = [l for l in lines[logs_before:] if "stray" not in l.lower()][:10]
    else:
        _, lines = server.log_lines()
        res["log_sample"] = lines[logs_before:logs_before + 2]
        res["log_not_stray"] = [l for l in lines[logs_before:] if "client timed out" not in l][:10]
    return res


def request_phase(loop, server, requester, n, grace_ns, requests, rate):
    """Unloaded (n == 0) or loaded: `requests` requests while n idle connections are pending."""
    waves = []
    loop.wave(("127.0.0.1", server.port), 0, grace_ns, requester=requester, requests=WARMUP_REQUESTS)
    requester.results = []
    while True:
        done = sum(1 for r in requester.results if r[3] == "pending")
        if done >= requests or len(waves) >= (MAX_WAVES if n else 1):
            break
        w = loop.wave(("127.0.0.1", server.port), n, grace_ns, requester=requester, requests=requests - done,
                      rate=rate)
        w.pop("lateness_ns")
        waves.append({k: w[k] for k in ("established", "closed", "not_closed", "connect_failed",
                                        "all_accepted_s", "first_close_after_all_accepted_s")})
    pend = [r for r in requester.results if r[3] == "pending"]
    closing = [r for r in requester.results if r[3] == "closing"]
    fails = {}
    for r in requester.results:
        if not r[1]:
            fails[r[2]] = fails.get(r[2], 0) + 1
    return {
        "request": requester.name,
        "latency_ms": summary_ms([r[0] for r in pend if r[1]]),
        "during_closes_ms": summary_ms([r[0] for r in closing if r[1]]),
        "failed": sum(1 for r in requester.results if not r[1]),
        "failures": fails,
        "waves": waves,
    }


# ---------------------------------------------------------------------------
# limits and environment

def prepare_limits(want):
    """Raises RLIMIT_NOFILE (soft, and hard when allowed) for this process and the
    servers it starts. Returns (soft, hard, note)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    note = None
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):
            note = f"RLIMIT_NOFILE hard limit is {hard} and this process may not raise it"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE) + (note,)


def environment(sources_n):
    somaxconn = (read_int("/proc/sys/net/core/somaxconn") or [None])[0]
    lo, hi = read_int("/proc/sys/net/ipv4/ip_local_port_range") or (32768, 60999)
    return {
        "cpus": os.cpu_count(),
        "somaxconn": somaxconn,
        "tcp_max_syn_backlog": (read_int("/proc/sys/net/ipv4/tcp_max_syn_backlog") or [None])[0],
        "ephemeral_ports": [lo, hi],
        "load_avg": os.getloadavg(),
    }


def default_zctl():
    for p in ("build/bin/zctl", "build/cli/zctl"):
        if os.path.exists(p):
            return p
    return "build/bin/zctl"


# ---------------------------------------------------------------------------
# report

def fmt(v, unit="", digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def ratio(a, b, digits=2):
    if a is None or b in (None, 0):
        return "-"
    return f"{a / b:.{digits}f}"


def print_report(r):
    env, cfg = r["environment"], r["config"]
    z = r["flood"].get("zctl")
    g = r["flood"].get("nginx")
    print(f"mesh flood: {cfg['connections']} idle connections, grace {cfg['grace']}, "
          f"{len(cfg['sources'])} source addresses {cfg['sources'][0]}..{cfg['sources'][-1]}, "
          + (f"paced at {cfg['rate']} connects/s" if cfg["rate"] else "connects unpaced"))
    if cfg.get("connections_note"):
        print(f"  NOTE: asked for {cfg['connections_asked']}; {cfg['connections_note']}")
    print(f"  machine: {env['cpus']} CPUs, load {env['load_avg'][0]:.2f} at start, "
          f"{env['load_avg_end'][0]:.2f} at end, somaxconn {env['somaxconn']}, "
          f"tcp_max_syn_backlog {env['tcp_max_syn_backlog']}, ephemeral ports "
          f"{env['ephemeral_ports'][0]}-{env['ephemeral_ports'][1]}, RLIMIT_NOFILE {cfg['nofile']}")
    print(f"  servers: {r['versions'].get('zctl', '-')}  |  nginx {r['versions'].get('nginx', '-')}")
    nr = cfg["rounds"]
    if nr > 1:
        print(f"  {nr} rounds, each: zctl flood, nginx flood, then the request series; figures are medians "
              f"of the rounds, counts are totals over all {nr}")
    print()

    cols = [("zctl", z), ("nginx", g)]

    def cells_of(fn):
        cells = []
        for _, d in cols:
            try:
                cells.append(fn(d) if d else "-")
            except (TypeError, KeyError):
                cells.append("-")
        return cells

    def row(label, fn, rat=None):
        cells = cells_of(fn)
        line = f"  {label:<38}{cells[0]:>20}{cells[1]:>20}"
        if rat is not None and z and g:
            try:
                line += f"{rat(z, g):>12}"
            except (TypeError, KeyError, ZeroDivisionError):
                pass
        print(line)

    print(f"Flood{'':<35}{'zctl serve':>20}{'nginx':>20}{'zctl/nginx':>12}")
    row("listen backlog", lambda d: fmt(d["listen_backlog"]))
    row("all connects established after", lambda d: fmt(d["all_established_s"], " s", 3))
    row("all accepted by the server after", lambda d: fmt(d["all_accepted_s"], " s", 3))
    row("accept rate", lambda d: fmt(d["accept_rate_per_s"], "/s"),
        lambda a, b: ratio(a["accept_rate_per_s"], b["accept_rate_per_s"]))
    row("established from first to last", lambda d: fmt(d["established_span_s"], " s", 3))
    row("connect time p50 / p99 / max (ms)", lambda d: "{:.2f}/{:.1f}/{:.0f}".format(
        d["connect_ms"]["p50"], d["connect_ms"]["p99"], d["connect_ms"]["max"]))
    row("listen overflows / drops (host)", lambda d: "{}/{}".format(
        d["listen_counters"].get("ListenOverflows", "-"), d["listen_counters"].get("ListenDrops", "-")))
    row("connect failures", lambda d: fmt(d["connect_failed"]))
    row("server RSS before (MiB)", lambda d: fmt(d["rss_before_kib"] / 1024, "", 2))
    row("server RSS all pending (MiB)", lambda d: fmt(d["rss_all_kib"] / 1024, "", 2))
    row("memory per pending connection", lambda d: fmt(d["bytes_per_pending"], " B"),
        lambda a, b: ratio(a["bytes_per_pending"], b["bytes_per_pending"]))
    row("server RSS peak (MiB)", lambda d: fmt(d["rss_peak_kib"] / 1024, "", 2))
    row("server RSS 1 s after the closes (MiB)", lambda d: fmt(d["rss_1s_after_kib"] / 1024, "", 2))
    row("closed by the server", lambda d: f"{d['closed']}/{d['established']}")
    row("  as FIN / RST / data first", lambda d: "{}/{}/{}".format(d["ends"]["eof"], d["ends"]["rst"],
                                                                  d["ends"]["data"]))
    row("  seen > 1 ms before the grace period", lambda d: fmt(d["closed_early"]))
    row("  closed before the grace period from connect()", lambda d: fmt(d["closed_before_grace"]))
    row("closed from first to last", lambda d: fmt(d["close_span_s"], " s", 3))
    row("close rate", lambda d: fmt(d["close_rate_per_s"], "/s"),
        lambda a, b: ratio(a["close_rate_per_s"], b["close_rate_per_s"]))
    for p in ("min", "p50", "p99", "max"):
        row(f"close lateness {p} (ms)", lambda d, p=p: fmt(d["lateness_ms"].get(p), "", 2))
    row("log lines written", lambda d: fmt(d["log_lines"]))
    row("server CPU time, whole flood (ms)", lambda d: fmt(d["server_cpu_ms"]),
        lambda a, b: ratio(a["server_cpu_ms"], b["server_cpu_ms"]))
    if z and "stray_events_in_sink" in z:
        row("stray events in the file sink", lambda d: fmt(d.get("stray_events_in_sink")))
    if nr > 1:
        for label, key in (("accept rate (/s)", lambda d: d["accept_rate_per_s"]),
                           ("memory per pending connection (B)", lambda d: d["bytes_per_pending"]),
                           ("close lateness p99 (ms)", lambda d: d["lateness_ms"].get("p99"))):
            cells = []
            for name in ("zctl", "nginx"):
                vals = [key(x["flood"][name]) for x in r["rounds"] if x["flood"].get(name)]
                if vals:
                    cells.append(f"{name} " + " ".join(fmt(v) if not isinstance(v, float) else f"{v:g}"
                                                         for v in vals))
            print(f"  per round, {label}: " + "  |  ".join(cells))
    for name, d in (("zctl", z), ("nginx", g)):
        if d and d.get("lateness_p50_ms_by_tenth"):
            print(f"  {name:<6}close lateness p50 (ms) by tenth of the flood, in connect order: "
                  + " ".join(f"{x:g}" for x in d["lateness_p50_ms_by_tenth"]))
    print()

    iso = r.get("isolation", {})
    zi, gi = iso.get("zctl"), iso.get("nginx")
    if zi or gi:
        print(f"Isolation{'':<31}{'zctl join':>20}{'nginx GET /':>20}")
        cols = [("zctl", zi), ("nginx", gi)]

        def lat(d, key, which):
            s = d[which][key]
            return "{:.2f}/{:.2f}/{:.2f}".format(s["p50"], s["p99"], s["max"]) if s.get("count") else "-"

        def irow(label, fn):
            cells = cells_of(fn)
            print(f"  {label:<38}{cells[0]:>20}{cells[1]:>20}")

        irow("unloaded: count", lambda d: fmt(d["unloaded"]["latency_ms"]["count"]))
        irow("unloaded p50/p99/max (ms)", lambda d: lat(d, "latency_ms", "unloaded"))
        irow(f"{cfg['connections']} pending: count", lambda d: fmt(d["loaded"]["latency_ms"]["count"]))
        irow(f"{cfg['connections']} pending p50/p99/max (ms)", lambda d: lat(d, "latency_ms", "loaded"))
        irow("p99 ratio loaded/unloaded, median", lambda d: fmt(median_or_none(d["p99_ratios"]), "", 2))
        irow("  per round", lambda d: " ".join(fmt(x, "", 2) for x in d["p99_ratios"]))
        irow("during the closes: count", lambda d: fmt(d["loaded"]["during_closes_ms"]["count"]))
        irow("during the closes p50/p99/max (ms)", lambda d: lat(d, "during_closes_ms", "loaded"))
        irow("failed (unloaded + loaded)", lambda d: fmt(d["unloaded"]["failed"] + d["loaded"]["failed"]))
        irow("flood waves used", lambda d: fmt(len(d["loaded"]["waves"])))
        for name, d in (("zctl", zi), ("nginx", gi)):
            if d:
                for phase in ("unloaded", "loaded"):
                    for reason, count in d[phase]["failures"].items():
                        print(f"  {name} {phase} failure x{count}: {reason}")
        print()

    if z and z.get("metrics"):
        print("zctl /metrics after the flood (non-zero mesh series):")
        for k, v in sorted(z["metrics"].items()):
            if v:
                print(f"  {k} {v:g}")
    for name, d in (("zctl", z), ("nginx", g)):
        if d and d.get("log_sample"):
            print(f"{name} log, first line of the flood: {d['log_sample'][0][:200]}")
        if d and d.get("log_not_stray"):
            print(f"{name} log lines other than per-connection timeouts (first {len(d['log_not_stray'])}):")
            for l in d["log_not_stray"]:
                print(f"  {l[:200]}")
    print()

    print("Targets")
    for t in r["targets"]:
        print(f"  {'PASS' if t['pass'] else 'FAIL' if t['pass'] is not None else 'n/a '}  {t['what']}")


def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def targets(r):
    out = []
    z, g = r["flood"].get("zctl"), r["flood"].get("nginx")
    n = r["config"]["connections"]
    if z:
        zb = z["bytes_per_pending"]
        gb = g["bytes_per_pending"] if g else None
        out.append({"what": f"memory per pending connection {fmt(zb, ' B')} <= nginx's {fmt(gb, ' B')}",
                    "pass": None if zb is None or gb is None else zb <= gb})
        p99 = z["lateness_ms"].get("p99")
        per = [x["flood"]["zctl"]["lateness_ms"].get("p99") for x in r["rounds"]]
        met = sum(1 for v in per if v is not None and v <= 20)
        out.append({"what": f"close lateness p99 {fmt(p99, ' ms', 2)} <= 20 ms (met in {met} of {len(per)} rounds)",
                    "pass": None if p99 is None else p99 <= 20})
        total = n * len(r["rounds"])
        # The one lateness that is not noise: the client stamps connect()
        # before the SYN leaves, so a close sooner than the grace period after
        # it is a server that started its clock before the handshake.
        out.append({"what": f"none closed before its grace period, counted from connect(): "
                            f"{z['closed_before_grace']} of {z['closed']}",
                    "pass": z["closed_before_grace"] == 0})
        out.append({"what": f"all {n} closed, every round: {z['closed']} of {total} closed, {z['not_closed']} "
                            f"left open, {z['connect_failed']} never connected",
                    "pass": z["closed"] == total})
    zi = r.get("isolation", {}).get("zctl")
    if zi:
        lo = zi["unloaded"]["latency_ms"].get("p99")
        hi = zi["loaded"]["latency_ms"].get("p99")
        rat = median_or_none(zi["p99_ratios"])
        out.append({"what": f"join p99 with {n} pending <= 2 x unloaded p99: ratio {fmt(rat, '', 2)} "
                            f"(medians {fmt(hi, ' ms', 2)} and {fmt(lo, ' ms', 2)})",
                    "pass": None if rat is None else rat <= 2})
    return out


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Example: bench/mesh_flood.py --zctl build/bin/zctl --connections 20000")
    ap.add_argument("--zctl", default=default_zctl(), help="zctl binary (default: %(default)s)")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx",
                    help="nginx binary (default: %(default)s)")
    ap.add_argument("--connections", type=int, default=20000, help="idle connections (default: %(default)s)")
    ap.add_argument("--grace", default="2s", type=str,
                    help="mesh.stray.grace_period and nginx client_header_timeout (default: %(default)s)")
    ap.add_argument("--joins", type=int, default=200,
                    help="sequential joins, unloaded and under the flood (default: %(default)s; 0 skips)")
    ap.add_argument("--sources", type=int, default=0,
                    help="loopback source addresses 127.0.0.10.. for the flood (default: enough for the "
                         "ephemeral port range)")
    ap.add_argument("--rate", type=int, default=0,
                    help="connects per second (default: 0, as fast as each server accepts them); pace both "
                         "servers alike to compare close lateness under the same stream of deadlines")
    ap.add_argument("--rounds", type=int, default=3,
                    help="flood and join series per server, alternating servers; tables show medians, counts are "
                         "totals (default: %(default)s)")
    ap.add_argument("--cluster-id", default="zctl", help="cluster id in the hellos (default: %(default)s)")
    ap.add_argument("--skip-nginx", action="store_true", help="measure the node only")
    ap.add_argument("--skip-zctl", action="store_true", help="measure nginx only (checks the client side)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the tables")
    args = ap.parse_args()
    try:
        grace_ms = parse_duration_ms(args.grace)
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    if args.connections < 1 or args.joins < 0 or args.rounds < 1 or args.rate < 0:
        ap.error("--connections and --rounds must be at least 1, --joins and --rate at least 0")
    if args.skip_nginx and args.skip_zctl:
        ap.error("--skip-nginx and --skip-zctl leave nothing to measure")

    try:
        report = run(args, grace_ms)
    except (BenchError, OSError) as e:
        print(f"mesh_flood: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def run(args, grace_ms):
    grace_ns = int(grace_ms * 1e6)
    if not args.skip_zctl and not os.access(args.zctl, os.X_OK):
        raise BenchError(f"{args.zctl} is not an executable (build first, or pass --zctl)")
    if not args.skip_nginx and not (args.nginx and os.access(args.nginx, os.X_OK)):
        raise BenchError(f"nginx not found ({args.nginx}); install it with scripts/setup.sh --bench, "
                         "or pass --skip-nginx")

    n_asked = args.connections
    soft, hard, note = prepare_limits(n_asked + FD_RESERVE_SERVER)
    n = min(n_asked, soft - FD_RESERVE_SERVER, soft - FD_RESERVE_CLIENT)
    if n < 1:
        raise BenchError(f"RLIMIT_NOFILE {soft} leaves no room for connections")
    conn_note = None
    if n < n_asked:
        conn_note = (f"{note or f'RLIMIT_NOFILE is {soft}'}, so each server can hold {n} "
                     f"(keeping {FD_RESERVE_SERVER} descriptors for its own files)")

    env = environment(0)
    lo, hi = env["ephemeral_ports"]
    nsrc = args.sources or max(1, math.ceil(n / ((hi - lo + 1) / 4)))
    sources = [f"127.0.0.{10 + i}" for i in range(min(nsrc, 240))]
    if env["somaxconn"] is not None and env["somaxconn"] < 1024:
        print(f"mesh_flood: warning: net.core.somaxconn is {env['somaxconn']}; listen queues overflow "
              "sooner and connects wait for SYN retransmits", file=sys.stderr)

    report = {
        "config": {"connections": n, "connections_asked": n_asked, "connections_note": conn_note,
                   "grace": args.grace, "grace_ms": grace_ms, "joins": args.joins, "sources": sources,
                   "nofile": soft, "connect_window": CONNECT_WINDOW, "rate": args.rate,
                   "rounds": args.rounds},
        "environment": env, "versions": {}, "rounds": [],
    }
    progress = (lambda msg: print(f"[mesh_flood] {msg}", file=sys.stderr, flush=True))

    loop = Loop(sources, soft)
    servers = []
    with tempfile.TemporaryDirectory(prefix="zctl-bench-flood-") as tmp:
        token_file = os.path.join(tmp, "token")
        token = "bench-" + os.urandom(12).hex()
        with open(token_file, "w") as f:
            f.write(token + "\n")
        os.chmod(token_file, 0o600)

        def start(server):
            servers.append(server)
            server.start(loop.diag)
            return server

        def node(name):
            z = ZctlNode(tmp, name, args.zctl, args.grace, token_file, args.cluster_id)
            z.check_config()
            return start(z)

        backlog = env["somaxconn"] or 4096
        try:
            for rnd in range(1, args.rounds + 1):
                one = {"flood": {}, "isolation": {}}
                report["rounds"].append(one)
                tag = f"round {rnd}/{args.rounds}"
                if not args.skip_zctl:
                    z = node(f"zctl-flood-{rnd}")
                    report["versions"]["zctl"] = z.version()
                    progress(f"{tag} zctl: flood of {n} against pid {z.proc.pid}")
                    one["flood"]["zctl"] = flood_phase(loop, z, n, grace_ns, args.rate)
                    backlog = one["flood"]["zctl"]["listen_backlog"] or backlog   # nginx gets the same queue
                    z.stop()
                if not args.skip_nginx:
                    g = start(Nginx(tmp, f"nginx-flood-{rnd}", args.nginx, grace_ms, soft, n, backlog))
                    report["versions"]["nginx"] = g.version()
                    progress(f"{tag} nginx: flood of {n} against worker pid {g.worker}")
                    one["flood"]["nginx"] = flood_phase(loop, g, n, grace_ns, args.rate)
                    g.stop()
                if not args.joins:
                    continue
                if not args.skip_zctl:
                    iso = one["isolation"]["zctl"] = {}
                    for phase, load in (("unloaded", 0), ("loaded", n)):
                        z = node(f"zctl-{phase}-{rnd}")
                        settle(z.proc.pid, 0.5)
                        progress(f"{tag} zctl: {args.joins} joins with {load} idle connections pending")
                        req = JoinRequester(("127.0.0.1", z.port), "127.0.0.1", args.cluster_id, token,
                                            f"bench-join-{rnd}-{phase}-")
                        iso[phase] = request_phase(loop, z, req, load, grace_ns, args.joins, args.rate)
                        z.stop()
                if not args.skip_nginx:
                    iso = one["isolation"]["nginx"] = {}
                    g = start(Nginx(tmp, f"nginx-requests-{rnd}", args.nginx, grace_ms, soft, n, backlog))
                    settle(g.worker, 0.5)
                    for phase, load in (("unloaded", 0), ("loaded", n)):
                        progress(f"{tag} nginx: {args.joins} GET / with {load} idle connections pending")
                        req = HttpRequester(("127.0.0.1", g.port), "127.0.0.1")
                        iso[phase] = request_phase(loop, g, req, load, grace_ns, args.joins, args.rate)
                    g.stop()
        finally:
            for s in servers:
                s.stop()
            loop.close()
    report["environment"]["load_avg_end"] = os.getloadavg()
    report["flood"] = {k: merge([r["flood"].get(k) for r in report["rounds"]])
                       for k in ("zctl", "nginx") if report["rounds"][0]["flood"].get(k)}
    report["isolation"] = {k: merge([r["isolation"].get(k) for r in report["rounds"]])
                           for k in ("zctl", "nginx") if report["rounds"][0]["isolation"].get(k)}
    for k, iso in report["isolation"].items():
        iso["p99_ratios"] = [
            round(r["isolation"][k]["loaded"]["latency_ms"]["p99"] / r["isolation"][k]["unloaded"]["latency_ms"]["p99"], 2)
            if r["isolation"][k]["loaded"]["latency_ms"].get("p99") and
            r["isolation"][k]["unloaded"]["latency_ms"].get("p99") else None
            for r in report["rounds"]]
    report["targets"] = targets(report)
    return report


# Keys whose values add up over rounds (counts); everything numeric else is the median.
SUMMED = {"opened", "established", "connect_failed", "not_closed", "closed", "closed_early", "closed_before_grace",
          "log_lines",
          "stray_events_in_sink", "count", "failed"}
SUMMED_CHILDREN = {"ends", "listen_counters", "failures", "metrics"}


def merge(items, summed=False):
    """Rounds -> one result of the same shape: counts summed, measurements as medians."""
    items = [x for x in items if x is not None]
    if not items:
        return None
    first = items[0]
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for x in items for k in x))
        return {k: (merge([x.get(k) for x in items], summed or k in SUMMED_CHILDREN) if k not in SUMMED
                    else sum(x.get(k) or 0 for x in items)) for k in keys}
    if isinstance(first, bool) or not isinstance(first, (int, float, list)):
        return first
    if isinstance(first, list):
        if first and all(isinstance(v, (int, float)) for x in items for v in x) and \
                len({len(x) for x in items}) == 1:
            return [statistics.median(col) for col in zip(*items)]
        return [v for x in items for v in x] if isinstance(first[0] if first else None, dict) else first
    if summed:
        return sum(items)
    m = statistics.median(items)
    return round(m) if all(isinstance(x, int) for x in items) else round(m, 3)


if __name__ == "__main__":
    sys.exit(main())
