#!/usr/bin/env python3
"""Three-node clusters of real `zctl serve` processes, each in a network
namespace of its own, joined by a bridge in one more namespace: the nodes talk
over veth pairs as separate hosts would. A partition takes a node's port off
the bridge, so its packets are dropped silently (no RST, no ICMP, the links
stay up), as when a switch port or a cable fails. Checked from every node's
event file: the side with the majority has a leader, the cut-off node goes
leaderless, and after the network heals the cut-off node announces the
majority's leader again within a bound that the kernel's TCP retransmission
timeouts alone would exceed.

Needs root and `ip` (iproute2); skipped otherwise."""

import os
import shutil
import subprocess
import time
import unittest

import test_cluster_multi  # the module, not its test class: that would run its tests here too
from harness import ZCTL, Node, NodeTestCase, main, wait_for
from test_cluster_multi import TIMING, announced_leader, cluster_events

RAFT_PORT = 7001
PARTITION_S = 5.0  # how long a partition lasts (from the cut to the heal)
REJOIN_BOUND_S = 3.0  # measured 0.4-0.9 s after a 5 s partition (announcement included)
SUBNET = "10.77.0"

_ns_counter = 0


def run_ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_unavailable():
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs `ip` (iproute2)"
    probe = f"zt-{os.getpid()}-probe"
    try:
        result = run_ip("netns", "add", probe, check=False)
        if result.returncode != 0:
            return f"`ip netns add` failed: {result.stderr.strip()}"
        result = run_ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if result.returncode != 0:
            return f"cannot create a bridge in a namespace: {result.stderr.strip()}"
    finally:
        run_ip("netns", "del", probe, check=False)
    return None


class Network:
    """Namespaces zt-<pid>-<k>-1..N (one per node), zt-<pid>-<k>-br holding
    the bridge br0, and veth pairs: eth0 in node i's namespace with address
    10.77.0.i/24, p<i> on the bridge."""

    def __init__(self, count):
        global _ns_counter
        _ns_counter += 1
        self.prefix = f"zt-{os.getpid()}-{_ns_counter}"
        self.bridge_ns = f"{self.prefix}-br"
        self.node_ns = [f"{self.prefix}-{i}" for i in range(1, count + 1)]
        self.created = []

    def address(self, i):
        return f"{SUBNET}.{i}"

    def create(self):
        br = self.bridge_ns
        self._add_ns(br)
        run_ip("-n", br, "link", "set", "lo", "up")
        # No STP: a port put back on the bridge forwards at once.
        run_ip("-n", br, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        run_ip("-n", br, "link", "set", "br0", "up")
        for i, ns in enumerate(self.node_ns, start=1):
            self._add_ns(ns)
            run_ip("-n", ns, "link", "set", "lo", "up")
            run_ip("-n", br, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            run_ip("-n", br, "link", "set", f"p{i}", "master", "br0")
            run_ip("-n", br, "link", "set", f"p{i}", "up")
            run_ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            run_ip("-n", ns, "link", "set", "eth0", "up")

    def _add_ns(self, name):
        run_ip("netns", "add", name)
        self.created.append(name)

    def isolate(self, i):
        """Takes node i's port off the bridge: everything it sends and
        everything sent to it is dropped without a word; its link stays up."""
        run_ip("-n", self.bridge_ns, "link", "set", f"p{i}", "nomaster")

    def heal(self, i):
        run_ip("-n", self.bridge_ns, "link", "set", f"p{i}", "master", "br0")

    def destroy(self):
        # Deleting a namespace removes the veth pairs and the bridge in it.
        for name in reversed(self.created):
            run_ip("netns", "del", name, check=False)
        self.created = []


class NetnsNode(Node):
    """A node run with `ip netns exec NS`, every port bound to the
    namespace's address. Raft ports are fixed: each namespace has its own."""

    def __init__(self, workdir, node_id, ns, address, config=None, extra_args=()):
        super().__init__(workdir, node_id, config=config, extra_args=extra_args)
        self.ns = ns
        self.address = address
        self.raft_port = RAFT_PORT

    def args(self):
        args = [ZCTL, "serve", "--id", self.node_id, "--data-dir", self.data_dir,
                "--admin", f"{self.address}:0", "--mesh", f"{self.address}:0",
                "--raft", f"{self.address}:{self.raft_port}"]
        if self.config_path:
            args += ["--config", self.config_path]
        return ["ip", "netns", "exec", self.ns, *args, *self.extra_args]


def state_events(node):
    return [e for e in cluster_events(node) if e["eventType"].startswith("state.")]


class ClusterNetnsTest(NodeTestCase):
    unavailable = None  # probed once, on the first test

    def setUp(self):
        # Skipped per test rather than per class, so that the run counts them.
        if ClusterNetnsTest.unavailable is None:
            ClusterNetnsTest.unavailable = netns_unavailable() or ""
        if ClusterNetnsTest.unavailable:
            raise unittest.SkipTest(ClusterNetnsTest.unavailable)
        super().setUp()
        self.net = Network(3)
        # Cleanups run after tearDown, which kills the nodes first.
        self.addCleanup(self.net.destroy)
        self.net.create()

    def start_cluster(self):
        def node(i, extra_args):
            n = NetnsNode(self.workdir, f"n{i}", self.net.node_ns[i - 1], self.net.address(i),
                          config=TIMING, extra_args=extra_args)
            self._nodes.append(n)
            return n.start()

        first = node(1, ["--bootstrap"])
        wait_for(lambda: announced_leader(first) == "n1", what="n1 to lead")
        self.assertEqual(first.mesh_address[0], self.net.address(1))
        seed = "%s:%d" % first.mesh_address
        nodes = [first] + [node(i, ["--join", seed]) for i in (2, 3)]
        for n in nodes:
            wait_for(lambda n=n: announced_leader(n) == "n1", timeout=20, what=f"{n.node_id} to announce n1")
        wait_for(lambda: self.voters(first) == {"n1", "n2", "n3"}, timeout=20, what="every node a voter")
        return nodes

    def voters(self, node):
        """The voters in the last configuration the node emitted."""
        changed = cluster_events(node, "members.changed")
        return {p["id"] for p in changed[-1]["peers"] if p["voter"]} if changed else set()

    def check_history(self, nodes):
        """At most one announced leader per term across all nodes, and
        contiguous seq in each file: the checker of test_cluster_multi."""
        test_cluster_multi.ClusterMultiTest.check_history(self, nodes)

    def rejoin(self, node, others, healed_at):
        """Waits for `node` to announce the leader every other node announces;
        returns the seconds since `healed_at`."""
        def agreed():
            leaders = {announced_leader(n) for n in others}
            return len(leaders) == 1 and None not in leaders and announced_leader(node) in leaders
        try:
            wait_for(agreed, timeout=30, what=f"{node.node_id} to announce the majority's leader")
        except AssertionError:
            raise AssertionError(f"{node.node_id} states: {state_events(node)}\n"
                                 f"stderr: {node.stderr()[-3000:]}")
        return time.monotonic() - healed_at

    def partition(self, i, during):
        """Cuts node i off for PARTITION_S seconds, running `during` (checks)
        meanwhile; returns the monotonic time of the heal."""
        cut_at = time.monotonic()
        self.net.isolate(i)
        try:
            during()
            time.sleep(max(0.0, PARTITION_S - (time.monotonic() - cut_at)))
        finally:
            self.net.heal(i)
        return time.monotonic()

    def test_a_silently_cut_off_leader_is_replaced_and_follows_again_after_the_heal(self):
        nodes = self.start_cluster()
        n1, n2, n3 = nodes
        majority = (n2, n3)

        def during():
            for n in majority:
                wait_for(lambda n=n: announced_leader(n) in ("n2", "n3"), timeout=PARTITION_S,
                         what=f"{n.node_id}: a new leader on the majority side")
            wait_for(lambda: cluster_events(n1, "state.is_leaderless"), timeout=PARTITION_S,
                     what="the cut-off leader to announce it is leaderless")

        healed_at = self.partition(1, during)
        new_leader = announced_leader(n2)
        self.assertEqual(announced_leader(n3), new_leader)
        rejoin = self.rejoin(n1, majority, healed_at)
        print(f"\n  old leader n1 announced {announced_leader(n1)} {rejoin:.2f} s after the heal "
              f"(partition {PARTITION_S:.0f} s)", flush=True)
        self.assertLess(rejoin, REJOIN_BOUND_S, f"n1 states: {state_events(n1)}")
        leaderless = cluster_events(n1, "state.is_leaderless")
        self.assertEqual(len(leaderless), 1)
        self.assertEqual(leaderless[0]["lastLeaderId"], "n1")
        self.assertEqual([e["eventType"] for e in cluster_events(n1) if e["eventType"].startswith("leadership.")],
                         ["leadership.gained", "leadership.lost"])
        # The majority went from n1 to the new leader, and kept it after the heal.
        for n in majority:
            announced = [e.get("leaderId") for e in state_events(n)]
            self.assertEqual((announced[0], announced[-1]), ("n1", new_leader), f"{n.node_id}: {state_events(n)}")
        self.check_history(nodes)

    def test_a_cut_off_follower_goes_leaderless_and_follows_again_after_the_heal(self):
        nodes = self.start_cluster()
        n1, n2, n3 = nodes
        majority = (n1, n2)
        before = {n.node_id: len(state_events(n)) for n in majority}

        def during():
            wait_for(lambda: announced_leader(n3) is None, timeout=PARTITION_S,
                     what="the cut-off follower to announce it is leaderless")

        healed_at = self.partition(3, during)
        rejoin = self.rejoin(n3, majority, healed_at)
        print(f"\n  follower n3 announced {announced_leader(n3)} {rejoin:.2f} s after the heal "
              f"(partition {PARTITION_S:.0f} s)", flush=True)
        self.assertLess(rejoin, REJOIN_BOUND_S, f"n3 states: {state_events(n3)}")
        self.assertEqual(announced_leader(n3), "n1")
        # The majority kept its leader throughout: no state event since the cut.
        for n in majority:
            self.assertEqual(len(state_events(n)), before[n.node_id], f"{n.node_id}: {state_events(n)}")
            self.assertEqual(announced_leader(n), "n1")
        self.assertEqual([e["eventType"] for e in state_events(n3)],
                         ["state.has_leader", "state.is_leaderless", "state.has_leader"])
        self.assertEqual(cluster_events(n3, "state.is_leaderless")[0]["lastLeaderId"], "n1")
        self.check_history(nodes)


if __name__ == "__main__":
    main()
