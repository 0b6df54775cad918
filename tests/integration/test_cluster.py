#!/usr/bin/env python3
"""The cluster engine of a single node: the default `zctl serve` bootstraps a
one-voter Raft cluster, validates itself as leader, announces it exactly once
(at once: a sole voter cannot flap), reports it in /readyz and /metrics, and
restarts on its data dir without bootstrapping again."""

import socket
import subprocess
import time

from harness import NodeTestCase, main, metric, wait_for


def cluster_events(node):
    return [e for e in node.events() if e["namespace"] == "cluster"]


class ClusterTest(NodeTestCase):
    def test_a_default_node_announces_itself_once_as_validated_leader(self):
        node = self.node("c1").start()
        events = wait_for(lambda: [e for e in cluster_events(node) if e["eventType"] == "leadership.gained"] and
                          cluster_events(node), what="leader events")
        has = [e for e in events if e["eventType"] == "state.has_leader"]
        self.assertEqual(len(has), 1)
        self.assertEqual((has[0]["leaderId"], has[0]["term"]), ("c1", 1))
        self.assertEqual([e for e in events if e["eventType"] == "state.is_leaderless"], [],
                         "no leaderless/has_leader pair at start-up")
        gained = [e for e in events if e["eventType"] == "leadership.gained"]
        self.assertEqual(gained[0]["peers"], ["127.0.0.1:%d" % node.raft_port])
        started = next(e for e in node.events() if e["eventType"] == "started")
        # The node's own started comes first, however fast the sole voter validates itself.
        self.assertEqual(has[0]["seq"], started["seq"] + 1)

        status, _, body = node.get("/readyz")
        self.assertEqual(status, 200, body)
        self.assertIn("leader c1 (term 1)", body)
        _, _, text = node.get("/metrics")
        self.assertEqual(metric(text, "controller_cluster_has_leader"), 1)
        self.assertEqual(metric(text, "controller_cluster_is_leader"), 1)
        self.assertEqual(metric(text, "controller_cluster_members"), 1)
        self.assertEqual(metric(text, "controller_cluster_leader_changes_total"), 1)
        self.assertEqual(metric(text, "controller_cluster_leader_flaps_suppressed_total"), 0)
        self.assertGreaterEqual(metric(text, "controller_cluster_commit_index"), 2)
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

        # The leader keeps proving itself: a barrier per heartbeat moves the commit index.
        first = metric(text, "controller_cluster_commit_index")
        time.sleep(0.5)
        self.assertGreater(metric(node.get("/metrics")[2], "controller_cluster_commit_index"), first)
        time.sleep(0.5)
        self.assertEqual(len([e for e in cluster_events(node) if e["eventType"] == "state.has_leader"]), 1,
                         "nothing more while the state is stable")

    def test_a_single_voter_is_announced_without_waiting_out_leader_stability(self):
        # Nothing can take a sole voter's leadership, so there is no flap to
        # wait out: with a one-minute window the announcement still comes.
        node = self.node("c1", config="cluster: { leader_stability: 1m }\n").start()
        has = wait_for(lambda: [e for e in cluster_events(node) if e["eventType"] == "state.has_leader"],
                       timeout=10, what="has_leader")
        self.assertEqual(has[0]["leaderId"], "c1")
        self.assertEqual(node.get("/readyz")[0], 200)

    def test_restart_reuses_the_raft_log_without_bootstrapping_again(self):
        node = self.node("c1").start()
        wait_for(lambda: [e for e in cluster_events(node) if e["eventType"] == "state.has_leader"], what="leader")
        self.assertIn("bootstrapped a new single-node cluster", node.stderr())
        self.assertEqual(node.stop(), 0)
        node.start()
        wait_for(lambda: len([e for e in cluster_events(node) if e["eventType"] == "state.has_leader"]) == 2,
                 what="leader after restart")
        self.assertNotIn("bootstrapped", node.stderr())
        self.assertEqual(node.get("/readyz")[0], 200)
        seqs = [e["seq"] for e in node.events()]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))

    def test_many_restarts_and_snapshots_keep_the_log_readable(self):
        # 5 ms heartbeats: a barrier every tick passes the snapshot threshold
        # (1024 entries) within seconds; every restart must load it back.
        config = "cluster: { election_timeout: 100ms, heartbeat: 5ms, leader_stability: 20ms }\n"
        node = self.node("snap", config=config).start()
        for _ in range(3):
            time.sleep(2.5)
            self.assertEqual(node.stop(), 0, node.stderr())
            node.start()
            wait_for(lambda: node.get("/readyz")[0] == 200, what="ready after restart")
        self.assertNotIn("cannot start", node.stderr())

    def test_a_raft_port_in_use_is_a_runtime_failure(self):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        self.addCleanup(busy.close)
        address = "127.0.0.1:%d" % busy.getsockname()[1]
        node = self.node("busy", extra_args=["--raft", address])
        code, _, err = node.run_to_exit()
        self.assertEqual(code, 4, err)
        self.assertIn(f"cluster: raft: listen on {address}", err)
        self.assertIn("address already in use", err)
        self.assertNotIn("handles still open", err)  # raft is closed after a failed start

    def test_bootstrap_and_join_exclude_each_other(self):
        node = self.node("j1", config="cluster: { bootstrap: true, join: [ 127.0.0.1:6262 ] }\n")
        code, _, err = node.run_to_exit()
        self.assertEqual(code, 1, err)
        self.assertIn("cluster.join: bootstrap: true starts a new cluster and cannot be combined with join", err)


if __name__ == "__main__":
    main()
