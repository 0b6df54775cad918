#!/usr/bin/env python3
"""Leader failover of a 3-node zctl cluster next to a 3-member etcd cluster, a graceful
handover, and the cold start of a single node.

Every run starts fresh processes on loopback, each run in its own temporary directory, with the
same Raft timing on both sides (--election-timeout, --heartbeat); zctl also holds every leader
state for --leader-stability before announcing it (SPEC section 5). Clusters are formed, left in
steady state for --settle seconds plus a random fraction of a heartbeat, then:

  failover   kill -9 the leader; time from the kill until every survivor reports the new leader:
               zctl  each survivor's cluster/state.has_leader event naming a leader other than
                     the killed node, read from its file sink, at the event's own timestamp;
               etcd  each survivor's `raft.node: ID elected leader X` (or `changed leader from A
                     to X`) log line, at the line's own timestamp (zap JSON logs, 1 ms).
             Runs alternate which of the two goes first.
  graceful   zctl only: SIGTERM the leader; time from the SIGTERM until every survivor has emitted
             has_leader for the new leader. Shown as announced, and less leader_stability: the
             moment the new leader was validated (the node announces a state exactly
             leader_stability after it began), i.e. the time without a validated leader.
  coldstart  a bootstrapped single node on an empty data dir: time from spawn to the timestamp of
             its has_leader event (and to the line appearing in the file); next to it etcd as a
             single member (spawn to `elected leader`) and `zctl version` (process start cost).

    bench/failover.py --build build                 # 10 runs of each, about two minutes
    bench/failover.py --runs 5 --sections failover --etcd-poll 5
    bench/failover.py --election-timeout 300ms --heartbeat 50ms --leader-stability 0ms --json

The exit status is 0 when every requested section ran (whatever the targets say), 1 when one
could not run (a missing binary, a zctl without multi-node joining, every run failed), 2 on a
usage error.
"""

import argparse
import ctypes
import datetime
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

MS = 1_000_000  # ns


class BenchError(Exception):
    """A run or a section cannot go on (as opposed to a target being missed)."""


# ---------------------------------------------------------------------------
# small helpers

def parse_duration_ms(text):
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected a duration in whole ms like 1000ms or 1s, got '{text}'")
    return int(m.group(1)) * (1000 if m.group(2) == "s" else 1)


_TS = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)$")


def parse_ts(text):
    """RFC 3339 / ISO 8601 timestamp (zctl: ns and +HH:MM; etcd's zap: ms and Z) -> ns since the epoch."""
    m = _TS.match(text)
    if not m:
        raise ValueError(f"unparsable timestamp {text!r}")
    zone = "+0000" if m.group(3) == "Z" else m.group(3).replace(":", "")
    whole = datetime.datetime.strptime(m.group(1) + zone, "%Y-%m-%dT%H:%M:%S%z")
    return int(whole.timestamp()) * 10**9 + int((m.group(2) or "0").ljust(9, "0"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_lines(path):
    """Complete lines of a file being appended to (a partial last line is left for later)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return data[:data.rfind(b"\n") + 1].decode(errors="replace").splitlines()


def read_jsonl(path):
    out = []
    for line in read_lines(path):
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # zap writes an occasional non-JSON line (Go runtime); events never do
    return out


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def wait_until(condition, timeout, what, interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def http(url, data=None, timeout=1.0):
    """(status, body) or (None, error text); never raises."""
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, ValueError) as e:
        return None, str(e)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


# ---------------------------------------------------------------------------
# processes: every one started here is killed by pid in Procs.kill_all (try/finally, also on
# Ctrl-C and SIGTERM), and dies with this script even if it is itself killed (PR_SET_PDEATHSIG).

try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


def _die_with_parent():
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class Procs:
    def __init__(self):
        self.live = []

    def spawn(self, args, stdout, stderr):
        with open(stdout, "w") as out, open(stderr, "w") as err:
            # Own session: a Ctrl-C reaches this script only, which then kills what it started.
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        self.live.append(proc)
        return proc

    def kill(self, proc):
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        if proc in self.live:
            self.live.remove(proc)

    def kill_all(self):
        for proc in list(self.live):
            self.kill(proc)


# ---------------------------------------------------------------------------
# zctl

class ZctlNode:
    """One `zctl serve` with its own YAML config, data dir and file sink."""

    def __init__(self, root, node_id, args, token_file):
        self.id = node_id
        self.dir = os.path.join(root, node_id)
        self.events_path = os.path.join(self.dir, "events.jsonl")
        self.config = os.path.join(root, f"{node_id}.yaml")
        self.stdout = os.path.join(root, f"{node_id}.stdout")
        self.stderr = os.path.join(root, f"{node_id}.stderr")
        self.mesh, self.raft, self.admin = free_port(), free_port(), free_port()
        self.proc = None
        self.spawned_ns = None
        mesh = f"listen: 127.0.0.1:{self.mesh}"
        if token_file:
            mesh += f", join_token_file: {json.dumps(token_file)}"
        with open(self.config, "w") as f:
            f.write(f"node: {{ id: {node_id}, data_dir: {json.dumps(self.dir)} }}\n"
                    f"mesh: {{ {mesh} }}\n"
                    f"cluster: {{ raft_listen: 127.0.0.1:{self.raft}, election_timeout: {args.election_timeout}ms, "
                    f"heartbeat: {args.heartbeat}ms, leader_stability: {args.leader_stability}ms }}\n"
                    f"admin: {{ listen: 127.0.0.1:{self.admin} }}\n"
                    f"sinks:\n"
                    f"  - {{ name: events, plugin: file, config: {{ path: {json.dumps(self.events_path)} }} }}\n")

    def start(self, procs, zctl, extra=()):
        self.spawned_ns = time.time_ns()
        self.proc = procs.spawn([zctl, "serve", "--config", self.config, *extra], self.stdout, self.stderr)
        return self

    def check_alive(self):
        if self.proc.poll() is not None:
            raise BenchError(f"zctl node {self.id} exited with {self.proc.returncode}:\n{tail(self.stderr)}")

    def events(self):
        return read_jsonl(self.events_path)

    def state_events(self, since_ns=0):
        """(timestamp ns, event) of this node's has_leader / is_leaderless events from since_ns on."""
        out = []
        for e in self.events():
            if e.get("namespace") == "cluster" and e.get("eventType") in ("state.has_leader", "state.is_leaderless"):
                ts = parse_ts(e["timestamp"])
                if ts >= since_ns:
                    out.append((ts, e))
        return out

    def announced_leader(self):
        """The leader of this node's last state event, or None (leaderless, or nothing announced)."""
        states = self.state_events()
        if not states or states[-1][1]["eventType"] != "state.has_leader":
            return None
        return states[-1][1]["leaderId"]

    def voters(self):
        """Voting members in this node's view: GET /v1/cluster, else the members gauge; None if neither."""
        status, body = http(f"http://127.0.0.1:{self.admin}/v1/cluster")
        if status == 200:
            try:
                members = json.loads(body).get("members")
            except ValueError:
                members = None
            if isinstance(members, list):
                def voting(m):
                    if not isinstance(m, dict):
                        return True
                    if "voter" in m:
                        return bool(m["voter"])
                    return m.get("role", "voter") == "voter"
                return sum(1 for m in members if voting(m))
        status, body = http(f"http://127.0.0.1:{self.admin}/metrics")
        if status == 200:
            m = re.search(r"^controller_cluster_members (\S+)$", body, re.M)
            if m:
                return int(float(m.group(1)))
        return None


def zctl_features(zctl):
    out = subprocess.run([zctl, "serve", "--help"], capture_output=True, text=True, timeout=10).stdout
    return {"bootstrap": "--bootstrap" in out, "join": re.search(r"--join\b(?!-)", out) is not None}


def form_zctl(procs, args, root):
    """Three nodes: n1 bootstraps, n2 then n3 join through n1's mesh port. Formed when every node
    announces the same leader and the leader counts three voters."""
    token = os.path.join(root, "join-token")
    with open(token, "w") as f:
        f.write("failover-bench-%016x\n" % random.getrandbits(64))
    nodes = [ZctlNode(root, f"n{i}", args, token) for i in (1, 2, 3)]
    first = nodes[0]
    first.start(procs, args.zctl, ["--bootstrap"] if args.features["bootstrap"] else [])

    def announces(node, leader):
        def check():
            for n in nodes:
                if n.proc is not None:
                    n.check_alive()
            return node.announced_leader() == leader
        return check

    wait_until(announces(first, first.id), 15, f"{first.id} to announce itself as leader")
    for node in nodes[1:]:
        node.start(procs, args.zctl, ["--join", f"127.0.0.1:{first.mesh}"])
        wait_until(announces(node, first.id), 30, f"{node.id} to join and announce {first.id}")

    def formed():
        for n in nodes:
            n.check_alive()
        leaders = {n.announced_leader() for n in nodes}
        if len(leaders) != 1 or None in leaders:
            return None
        leader_id = leaders.pop()
        leader = next((n for n in nodes if n.id == leader_id), None)
        return leader if leader and leader.voters() == 3 else None

    leader = wait_until(formed, 30, "three voters agreeing on one leader", interval=0.05)
    return nodes, leader


def zctl_handover(procs, args, sig, root):
    """One zctl run: form, settle, signal the leader, wait for every survivor to announce a new one."""
    nodes, leader = form_zctl(procs, args, root)
    survivors = [n for n in nodes if n is not leader]
    formed_ns = time.time_ns()
    time.sleep(args.settle + random.uniform(0, args.heartbeat / 1000))
    t0 = time.time_ns()
    os.kill(leader.proc.pid, sig)
    if sig == signal.SIGKILL:
        leader.proc.wait()
    limit = 2 * args.election_timeout / 1000 + args.leader_stability / 1000 + 10

    def settled():
        for n in survivors:
            n.check_alive()
        finals = set()
        for n in survivors:
            states = n.state_events(t0)
            if not states or states[-1][1]["eventType"] != "state.has_leader":
                return None
            finals.add(states[-1][1]["leaderId"])
        return finals.pop() if len(finals) == 1 and leader.id not in finals else None

    new_leader = wait_until(settled, limit, f"the survivors to announce a leader other than {leader.id}")
    result = {"killed": leader.id, "signal": signal.Signals(sig).name, "new_leader": new_leader,
              # nodes that announced anything while the cluster was meant to be steady
              "unsteady": [n.id for n in nodes if any(ts < t0 for ts, _ in n.state_events(formed_ns))],
              "survivors": {}}
    for n in survivors:
        states = n.state_events(t0)
        has = next((ts, e) for ts, e in states if e["eventType"] == "state.has_leader" and e["leaderId"] == new_leader)
        leaderless = [ts for ts, e in states if e["eventType"] == "state.is_leaderless"]
        result["survivors"][n.id] = {
            "ms": (has[0] - t0) / MS, "term": has[1].get("term"),
            "is_leaderless_ms": (leaderless[0] - t0) / MS if leaderless else None,
            "other_leaders": sorted({e["leaderId"] for _, e in states
                                     if e["eventType"] == "state.has_leader" and e["leaderId"] != new_leader})}
    times = [s["ms"] for s in result["survivors"].values()]
    result["all_ms"], result["first_ms"] = max(times), min(times)
    if sig == signal.SIGTERM:
        try:
            leader.proc.wait(timeout=15)
            result["old_leader_exit_code"] = leader.proc.returncode
        except subprocess.TimeoutExpired:
            result["old_leader_exit_code"] = None
        stopping = [e for e in leader.events() if e.get("eventType") == "stopping"]
        result["old_leader_stopping_ms"] = (parse_ts(stopping[-1]["timestamp"]) - t0) / MS if stopping else None
    return result


def zctl_coldstart(procs, args, root):
    node = ZctlNode(root, "c1", args, None)
    node.start(procs, args.zctl, ["--bootstrap"] if args.features["bootstrap"] else [])

    def announced():
        node.check_alive()
        states = node.state_events()
        return states[0] if states else None

    ts, event = wait_until(announced, 15, "the single node's first state event", interval=0.002)
    seen = time.time_ns()
    if event["eventType"] != "state.has_leader":
        raise BenchError(f"the single node announced {event['eventType']} first")
    started = next((e for e in node.events() if e.get("eventType") == "started"), None)
    procs.kill(node.proc)
    return {"event_ms": (ts - node.spawned_ns) / MS, "seen_ms": (seen - node.spawned_ns) / MS,
            "started_ms": (parse_ts(started["timestamp"]) - node.spawned_ns) / MS if started else None}


# ---------------------------------------------------------------------------
# etcd

_ETCD_LEADER = re.compile(r"raft\.node: ([0-9a-f]+) (?:elected leader|changed leader from [0-9a-f]+ to) "
                          r"([0-9a-f]+) at term (\d+)")
_ETCD_LOST = re.compile(r"raft\.node: ([0-9a-f]+) lost leader ([0-9a-f]+) at term (\d+)")


class EtcdMember:
    def __init__(self, root, name):
        self.name = name
        self.dir = os.path.join(root, name)
        self.log = os.path.join(root, f"{name}.log")
        self.client, self.peer = free_port(), free_port()
        self.proc = None
        self.spawned_ns = None
        self.hex_id = None

    def peer_url(self):
        return f"http://127.0.0.1:{self.peer}"

    def start(self, procs, args, initial_cluster):
        cmd = [args.etcd, "--name", self.name, "--data-dir", self.dir,
               "--listen-client-urls", f"http://127.0.0.1:{self.client}",
               "--advertise-client-urls", f"http://127.0.0.1:{self.client}",
               "--listen-peer-urls", self.peer_url(), "--initial-advertise-peer-urls", self.peer_url(),
               "--initial-cluster", initial_cluster, "--initial-cluster-state", "new",
               "--initial-cluster-token", f"bench-{os.path.basename(os.path.dirname(self.dir))}",
               "--election-timeout", str(args.election_timeout), "--heartbeat-interval", str(args.heartbeat),
               f"--pre-vote={'false' if args.etcd_no_pre_vote else 'true'}",
               "--logger", "zap", "--log-outputs", "stderr", "--log-level", "info"]
        self.spawned_ns = time.time_ns()
        self.proc = procs.spawn(cmd, os.devnull, self.log)
        return self

    def check_alive(self):
        if self.proc.poll() is not None:
            raise BenchError(f"etcd member {self.name} exited with {self.proc.returncode}:\n{tail(self.log)}")

    def status(self, timeout=0.5):
        """Maintenance.Status through the gRPC gateway: (member id, leader id) as hex, or None."""
        code, body = http(f"http://127.0.0.1:{self.client}/v3/maintenance/status", b"{}", timeout)
        if code != 200:
            return None
        try:
            doc = json.loads(body)
            return format(int(doc["header"]["member_id"]), "x"), format(int(doc.get("leader", "0")), "x")
        except (ValueError, KeyError, TypeError):
            return None

    def leader_lines(self, since_ns=0):
        """(timestamp ns, leader hex id, term) of each `raft.node: ... leader X` log line from since_ns on,
        with leader None for `lost leader`."""
        out = []
        for rec in read_jsonl(self.log):
            msg = rec.get("msg", "") if isinstance(rec, dict) else ""
            m = _ETCD_LEADER.search(msg) or _ETCD_LOST.search(msg)
            if not m:
                continue
            ts = parse_ts(rec["ts"])
            # zap stamps whole milliseconds: a line in the kill's own millisecond counts.
            if ts >= since_ns - MS:
                out.append((ts, None if "lost leader" in msg else m.group(2), int(m.group(3))))
        return out


def form_etcd(procs, args, root, size=3):
    members = [EtcdMember(root, f"e{i}") for i in range(1, size + 1)]
    initial = ",".join(f"{m.name}={m.peer_url()}" for m in members)
    for m in members:
        m.start(procs, args, initial)

    def formed():
        for m in members:
            m.check_alive()
        views = [m.status() for m in members]
        if None in views:
            return None
        for m, (member_id, _) in zip(members, views):
            m.hex_id = member_id
        leaders = {leader for _, leader in views}
        if len(leaders) != 1 or "0" in leaders:
            return None
        leader_id = leaders.pop()
        return next((m for m in members if m.hex_id == leader_id), None)

    leader = wait_until(formed, 30, "etcd members to agree on a leader", interval=0.05)
    return members, leader


def etcd_failover(procs, args, root):
    members, leader = form_etcd(procs, args, root)
    survivors = [m for m in members if m is not leader]
    time.sleep(args.settle + random.uniform(0, args.heartbeat / 1000))
    t0 = time.time_ns()
    os.kill(leader.proc.pid, signal.SIGKILL)
    leader.proc.wait()
    limit = 2 * args.election_timeout / 1000 + 10
    polled = {}  # --etcd-poll: first time each survivor's status named a new leader

    def settled():
        for m in survivors:
            m.check_alive()
            if args.etcd_poll and m.name not in polled:
                view = m.status(timeout=0.2)
                if view and view[1] not in ("0", leader.hex_id):
                    polled[m.name] = (time.time_ns(), view[1])
        finals = set()
        for m in survivors:
            lines = m.leader_lines(t0)
            if not lines or lines[-1][1] is None:
                return None
            finals.add(lines[-1][1])
        if len(finals) != 1 or leader.hex_id in finals:
            return None
        return finals.pop() if not args.etcd_poll or len(polled) == len(survivors) else None

    new_leader = wait_until(settled, limit, f"etcd survivors to log a leader other than {leader.hex_id}",
                            interval=args.etcd_poll / 1000 if args.etcd_poll else 0.01)
    result = {"killed": leader.hex_id, "new_leader": new_leader, "survivors": {}}
    for m in survivors:
        lines = m.leader_lines(t0)
        ts, _, term = next(line for line in lines if line[1] == new_leader)
        lost = [line[0] for line in lines if line[1] is None]
        result["survivors"][m.name] = {
            "ms": (ts - t0) / MS, "term": term, "lost_leader_ms": (lost[0] - t0) / MS if lost else None,
            "other_leaders": sorted({line[1] for line in lines if line[1] not in (None, new_leader)})}
        if args.etcd_poll:
            result["survivors"][m.name]["polled_ms"] = (polled[m.name][0] - t0) / MS
    # The log is the measure; the status API must agree with it.
    for m in survivors:
        view = wait_until(lambda: m.status(), 5, f"etcd {m.name} status")
        if view[1] != new_leader:
            raise BenchError(f"etcd {m.name} logged leader {new_leader} but its status says {view[1]}")
    times = [s["ms"] for s in result["survivors"].values()]
    result["all_ms"], result["first_ms"] = max(times), min(times)
    if args.etcd_poll:
        result["polled_all_ms"] = max(s["polled_ms"] for s in result["survivors"].values())
    return result


def etcd_coldstart(procs, args, root):
    member = EtcdMember(root, "s1")
    member.start(procs, args, f"{member.name}={member.peer_url()}")

    def elected():
        member.check_alive()
        lines = [line for line in member.leader_lines() if line[1] is not None]
        return lines[0] if lines else None

    ts, _, _ = wait_until(elected, 15, "the single etcd member to elect itself", interval=0.002)
    seen = time.time_ns()
    procs.kill(member.proc)
    return {"event_ms": (ts - member.spawned_ns) / MS, "seen_ms": (seen - member.spawned_ns) / MS}


def spawn_baseline(zctl):
    t = time.perf_counter()
    subprocess.run([zctl, "version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - t) * 1000


# ---------------------------------------------------------------------------
# runs and summary

GIVE_UP_AFTER = 3  # a series whose first runs all failed is not tried again


def one_run(procs, work, series, label, fn, *fargs):
    """Runs fn in a fresh directory and appends its result to series, or None after reporting why
    it failed. Whatever it started is killed before the next run."""
    if len(series) >= GIVE_UP_AFTER and not any(series):
        series.append(None)
        return
    root = tempfile.mkdtemp(prefix=f"{label}-", dir=work)
    try:
        series.append(fn(procs, *fargs, root=root))
    except (BenchError, OSError, subprocess.SubprocessError, ValueError, KeyError, StopIteration) as e:
        print(f"  {label}: run failed: {e}", file=sys.stderr)
        series.append(None)
        if len(series) == GIVE_UP_AFTER and not any(series):
            print(f"  {label}: the first {GIVE_UP_AFTER} runs failed; not trying again", file=sys.stderr)
    finally:
        procs.kill_all()
        shutil.rmtree(root, ignore_errors=True)


def progress(what, section, key):
    """One line on stderr per run: each side's figure, or - for a failed run."""
    parts = [f"{side} " + (f"{runs[-1][key]:.0f} ms" if runs[-1] else "-")
             for side, runs in section.items() if side in ("zctl", "etcd") and runs]
    print(f"{what}: " + "  ".join(parts), file=sys.stderr)


def stats(values):
    if not values:
        return None
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1),
            "min": round(min(values), 1), "n": len(values)}


def fmt_row(name, st, runs, note=""):
    if st is None:
        return f"  {name:<46} {'-':>8} {'-':>8} {'-':>8}   0/{runs}  {note}".rstrip()
    return (f"  {name:<46} {st['median']:8.0f} {st['max']:8.0f} {st['min']:8.0f}   "
            f"{st['n']}/{runs}  {note}").rstrip()


def verdict(ok):
    return "PASS" if ok else "FAIL"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--build", default=os.environ.get("ZCTL_BUILD_DIR", "build"),
                    help="build directory holding bin/zctl and lib/zctl/plugins/file.so (default: %(default)s)")
    ap.add_argument("--runs", type=int, default=10, help="runs of each section (default: %(default)s)")
    ap.add_argument("--election-timeout", type=parse_duration_ms, default=1000, metavar="DUR",
                    help="Raft election timeout for both (default: 1000ms)")
    ap.add_argument("--heartbeat", type=parse_duration_ms, default=100, metavar="DUR",
                    help="Raft heartbeat for both (default: 100ms)")
    ap.add_argument("--leader-stability", type=parse_duration_ms, default=300, metavar="DUR",
                    help="zctl cluster.leader_stability (default: 300ms)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds of steady state after a cluster formed, before the signal (default: %(default)s)")
    ap.add_argument("--sections", default="coldstart,failover,graceful",
                    help="comma-separated subset of coldstart,failover,graceful (default: all)")
    ap.add_argument("--skip-etcd", action="store_true", help="zctl only (no etcd comparison)")
    ap.add_argument("--skip-zctl", action="store_true", help="etcd only")
    ap.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd", help="etcd binary")
    ap.add_argument("--etcd-no-pre-vote", action="store_true",
                    help="run etcd without --pre-vote (zctl always uses pre-vote)")
    ap.add_argument("--etcd-poll", type=int, default=0, metavar="MS",
                    help="also poll the etcd survivors' /v3/maintenance/status every MS ms during a failover "
                         "and report that figure next to the log's (a cross-check; adds client load)")
    ap.add_argument("--seed", type=int, help="seed for the random heartbeat phase of each signal")
    ap.add_argument("--json", action="store_true", help="print one JSON document with every run instead of tables")
    args = ap.parse_args()

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"coldstart", "failover", "graceful"}
    if unknown or not sections or args.runs < 1:
        ap.error(f"bad --sections {args.sections!r}" if unknown or not sections else "--runs must be at least 1")
    if args.skip_etcd and args.skip_zctl:
        ap.error("--skip-etcd and --skip-zctl leave nothing to run")
    if not 0 < args.heartbeat < args.election_timeout:
        ap.error("the heartbeat must be shorter than the election timeout")
    random.seed(args.seed)
    args.zctl = os.path.join(args.build, "bin", "zctl")
    use_zctl, use_etcd = not args.skip_zctl, not args.skip_etcd

    problems = []
    if use_zctl:
        for path in (args.zctl, os.path.join(args.build, "lib", "zctl", "plugins", "file.so")):
            if not os.path.exists(path):
                print(f"missing {path}: build the project first (targets zctl and zctl_sink_file)", file=sys.stderr)
                return 1
        args.features = zctl_features(args.zctl)
        zctl_version = subprocess.run([args.zctl, "--version"], capture_output=True, text=True).stdout.strip()
    else:
        args.features, zctl_version = {"bootstrap": False, "join": False}, None
    etcd_version = None
    if use_etcd:
        if not shutil.which(args.etcd):
            print(f"etcd not found ({args.etcd}): apt-get install -y etcd-server", file=sys.stderr)
            return 1
        etcd_version = subprocess.run([args.etcd, "--version"], capture_output=True,
                                      text=True).stdout.split("\n")[0].replace("etcd Version: ", "")
        if args.election_timeout < 5 * args.heartbeat:
            print("note: etcd refuses an election timeout under 5 heartbeats", file=sys.stderr)
    multi_node = use_zctl and args.features["join"]
    if use_zctl and not multi_node and ({"failover", "graceful"} & set(sections)):
        problems.append(f"zctl failover and graceful not run: `{args.zctl} serve --help` has no --join "
                        "(multi-node joining is not in this build)")

    procs = Procs()

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    load_before = loadavg()
    data = {"config": {"election_timeout_ms": args.election_timeout, "heartbeat_ms": args.heartbeat,
                       "leader_stability_ms": args.leader_stability, "runs": args.runs, "settle_s": args.settle,
                       "etcd_pre_vote": not args.etcd_no_pre_vote, "zctl": zctl_version, "etcd": etcd_version,
                       "zctl_features": args.features, "cpus": os.cpu_count()},
            "load_before": load_before}
    try:
        with tempfile.TemporaryDirectory(prefix="zctl-failover-bench-") as work:
            if "coldstart" in sections:
                cold = data["coldstart"] = {"zctl": [], "etcd": [], "spawn_ms": []}
                for r in range(args.runs):
                    if use_zctl:
                        cold["spawn_ms"].append(spawn_baseline(args.zctl))
                        one_run(procs, work, cold["zctl"], "zctl-cold", zctl_coldstart, args)
                    if use_etcd:
                        one_run(procs, work, cold["etcd"], "etcd-cold", etcd_coldstart, args)
                    progress(f"coldstart {r + 1}", cold, "event_ms")
            if "failover" in sections:
                fo = data["failover"] = {"zctl": [], "etcd": []}
                for r in range(args.runs):
                    order = ("zctl", "etcd") if r % 2 == 0 else ("etcd", "zctl")
                    for which in order:
                        if which == "zctl" and multi_node:
                            one_run(procs, work, fo["zctl"], "zctl-kill", zctl_handover, args, signal.SIGKILL)
                        elif which == "etcd" and use_etcd:
                            one_run(procs, work, fo["etcd"], "etcd-kill", etcd_failover, args)
                    progress(f"failover {r + 1}", fo, "all_ms")
            if "graceful" in sections and multi_node:
                gr = data["graceful"] = {"zctl": []}
                for r in range(args.runs):
                    one_run(procs, work, gr["zctl"], "zctl-term", zctl_handover, args, signal.SIGTERM)
                    progress(f"graceful {r + 1}", gr, "all_ms")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    finally:
        procs.kill_all()
    data["load_after"] = loadavg()

    # ---- summary
    ls, et = args.leader_stability, args.election_timeout
    ok = lambda runs: [x for x in runs if x is not None]
    summary, lines, targets = {}, [], []
    lines.append(f"election timeout {et} ms, heartbeat {args.heartbeat} ms, zctl leader_stability {ls} ms; "
                 f"{args.runs} runs, fresh processes and data dirs for each")
    lines.append(f"zctl: {zctl_version or '-'}   etcd: {etcd_version or '-'} "
                 f"(pre-vote {'off' if args.etcd_no_pre_vote else 'on'})   cores: {os.cpu_count()}   "
                 f"load {load_before} before, {data['load_after']} after")
    header = f"  {'ms':<46} {'median':>8} {'max':>8} {'min':>8}   runs"

    if "coldstart" in data:
        cold = data["coldstart"]
        z, e = ok(cold["zctl"]), ok(cold["etcd"])
        s = summary["coldstart"] = {
            "zctl_event": stats([x["event_ms"] for x in z]), "zctl_seen": stats([x["seen_ms"] for x in z]),
            "zctl_started": stats([x["started_ms"] for x in z if x["started_ms"] is not None]),
            "etcd_event": stats([x["event_ms"] for x in e]), "spawn": stats(cold["spawn_ms"])}
        lines += ["", "Cold start: a bootstrapped single node on an empty data dir, from spawn", header]
        if use_zctl:
            lines.append(fmt_row("zctl `version`, spawn to exit (baseline)", s["spawn"], args.runs))
            lines.append(fmt_row("zctl to node/started", s["zctl_started"], args.runs))
            lines.append(fmt_row("zctl to has_leader (event timestamp)", s["zctl_event"], args.runs))
            lines.append(fmt_row("zctl to has_leader (line in the file)", s["zctl_seen"], args.runs))
        if use_etcd:
            lines.append(fmt_row("etcd single member to `elected leader`", s["etcd_event"], args.runs))
        if s["zctl_event"] and s["etcd_event"]:
            ratio = s["zctl_event"]["median"] / s["etcd_event"]["median"]
            lines.append(f"  {'ratio zctl/etcd (medians)':<46} {ratio:8.2f}")
        if s["zctl_event"]:
            # A sole voter is announced without the leader_stability window.
            targets.append(("cold start to the has_leader event < 300 ms (median)",
                            s["zctl_event"]["median"] < 300, f"{s['zctl_event']['median']:.0f} ms"))
        elif use_zctl:
            problems.append("zctl cold start: every run failed")
        if use_etcd and not s["etcd_event"]:
            problems.append("etcd cold start: every run failed")

    if "failover" in data:
        fo = data["failover"]
        z, e = ok(fo["zctl"]), ok(fo["etcd"])
        s = summary["failover"] = {
            "zctl_all": stats([x["all_ms"] for x in z]), "zctl_first": stats([x["first_ms"] for x in z]),
            "zctl_validated": stats([x["all_ms"] - ls for x in z]),
            "etcd_all": stats([x["all_ms"] for x in e]), "etcd_first": stats([x["first_ms"] for x in e])}
        if args.etcd_poll:
            s["etcd_polled"] = stats([x["polled_all_ms"] for x in e])
        lines += ["", "Failover: kill -9 the leader of 3, until every survivor reports the new leader", header]
        if use_etcd:
            lines.append(fmt_row("etcd, every survivor (log lines)", s["etcd_all"], args.runs))
            lines.append(fmt_row("etcd, first survivor", s["etcd_first"], args.runs))
            if args.etcd_poll:
                lines.append(fmt_row(f"etcd, every survivor (status polled {args.etcd_poll} ms)",
                                     s["etcd_polled"], args.runs))
        if multi_node:
            lines.append(fmt_row("zctl, every survivor (has_leader events)", s["zctl_all"], args.runs))
            lines.append(fmt_row("zctl, first survivor", s["zctl_first"], args.runs))
            lines.append(fmt_row(f"zctl validated (less {ls} ms leader_stability)", s["zctl_validated"], args.runs))
            leaderless = sum(1 for x in z for v in x["survivors"].values() if v["is_leaderless_ms"] is not None)
            lines.append(f"  survivors that announced is_leaderless first: {leaderless} of {2 * len(z)}")
            unsteady = sum(1 for x in z if x["unsteady"])
            if unsteady:
                lines.append(f"  runs where a node announced a change during --settle: {unsteady}")
        if s["zctl_all"] and s["etcd_all"]:
            ratio = s["zctl_all"]["median"] / s["etcd_all"]["median"]
            lines.append(f"  {'ratio zctl/etcd (medians)':<46} {ratio:8.2f}")
            targets.append(("failover median <= etcd's median", s["zctl_all"]["median"] <= s["etcd_all"]["median"],
                            f"{s['zctl_all']['median']:.0f} vs {s['etcd_all']['median']:.0f} ms"))
        if s["zctl_all"]:
            bound = 2 * et + ls
            targets.append((f"failover median <= 2 x election timeout + leader_stability = {bound} ms",
                            s["zctl_all"]["median"] <= bound, f"{s['zctl_all']['median']:.0f} ms"))
        elif multi_node:
            problems.append("zctl failover: every run failed")
        if use_etcd and not s["etcd_all"]:
            problems.append("etcd failover: every run failed")

    if "graceful" in data:
        z = ok(data["graceful"]["zctl"])
        s = summary["graceful"] = {
            "zctl_all": stats([x["all_ms"] for x in z]), "zctl_first": stats([x["first_ms"] for x in z]),
            "zctl_validated": stats([x["all_ms"] - ls for x in z]),
            "old_leader_stopping": stats([x["old_leader_stopping_ms"] for x in z
                                          if x.get("old_leader_stopping_ms") is not None])}
        lines += ["", "Graceful: SIGTERM on the zctl leader, until every survivor announces the new leader", header]
        lines.append(fmt_row("SIGTERM to has_leader, every survivor", s["zctl_all"], args.runs))
        lines.append(fmt_row("SIGTERM to has_leader, first survivor", s["zctl_first"], args.runs))
        lines.append(fmt_row(f"without a validated leader (less {ls} ms)", s["zctl_validated"], args.runs))
        lines.append(fmt_row("SIGTERM to the old leader's node/stopping", s["old_leader_stopping"], args.runs))
        leaderless = sum(1 for x in z for v in x["survivors"].values() if v["is_leaderless_ms"] is not None)
        lines.append(f"  survivors that announced is_leaderless in between: {leaderless} of {2 * len(z)}")
        unsteady = sum(1 for x in z if x["unsteady"])
        if unsteady:
            lines.append(f"  runs where a node announced a change during --settle: {unsteady}")
        if s["zctl_all"]:
            targets.append(("graceful gap to the has_leader event < 200 ms (median)", s["zctl_all"]["median"] < 200,
                            f"{s['zctl_all']['median']:.0f} ms" +
                            (f"; cannot be below leader_stability ({ls} ms)" if ls >= 200 else "")))
            targets.append(("graceful time without a validated leader < 200 ms (median)",
                            s["zctl_validated"]["median"] < 200, f"{s['zctl_validated']['median']:.0f} ms"))
        else:
            problems.append("zctl graceful: every run failed")

    if args.json:
        data["summary"] = summary
        data["targets"] = [{"target": t, "pass": p, "value": v} for t, p, v in targets]
        data["problems"] = problems
        print(json.dumps(data, indent=1))
    else:
        print("\n".join(lines))
        if targets:
            print("\nTargets")
            for t, p, v in targets:
                print(f"  {verdict(p)}  {t}  ({v})")
        for p in problems:
            print(f"\nnot measured: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
