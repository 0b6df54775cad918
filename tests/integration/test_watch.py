#!/usr/bin/env python3
"""`zctl watch` against a real node: JSON output byte-identical to the file
sink, filters, --count, resuming across a node restart without duplicates,
and the exit code when the node cannot be reached."""

import json
import os
import signal
import subprocess

from harness import ZCTL, NodeTestCase, free_port, main, wait_for


class WatchTest(NodeTestCase):
    def test_json_output_is_byte_identical_to_the_file_sink(self):
        node = self.node("n1").start()
        result = self.zctl("watch", "--node", node.admin_url, "--since", "0", "--count", "1", "-o", "json")
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(node.events_file) as f:
            first_line = f.readline()
        self.assertEqual(result.stdout, first_line)

    def test_table_output_is_one_readable_line_per_event(self):
        node = self.node("n1").start()
        result = self.zctl("watch", "--node", node.admin_url, "--since", "0", "--count", "1", "-o", "table")
        self.assertEqual(result.returncode, 0, result.stderr)
        line = result.stdout.strip()
        self.assertRegex(line, r"^\d{2}:\d{2}:\d{2}\.\d{3} #1\s+node\s+started\s+version=\S+ pid=\d+ ")
        self.assertNotIn("\033[", line)  # no colour when not on a terminal

    def test_filters_by_namespace_and_type_glob(self):
        node = self.node("n1").start()
        node.stop()
        node.start()  # journal: started(3); the stream then sees stopping(4)
        out = os.path.join(self.workdir, "watch.out")
        watch = self.spawn([ZCTL, "watch", "--node", node.admin_url, "--since", "0", "--namespace", "node",
                            "--type", "stop*", "-o", "json"], stdout=open(out, "w"), stderr=subprocess.PIPE)
        node.stop()
        node.start(wait=False)
        wait_for(lambda: open(out).read().count("\n") >= 1, what="the filtered event")
        watch.send_signal(signal.SIGINT)
        watch.wait(timeout=5)
        events = [json.loads(l) for l in open(out).read().splitlines()]
        self.assertEqual([e["eventType"] for e in events], ["stopping"])

    def test_resumes_across_a_node_restart_without_gaps_or_duplicates(self):
        port = free_port()
        node = self.node("n1", extra_args=["--admin", f"127.0.0.1:{port}"]).start()
        out = os.path.join(self.workdir, "watch.out")
        err = os.path.join(self.workdir, "watch.err")
        watch = self.spawn([ZCTL, "watch", "--node", node.admin_url, "--since", "0", "-o", "json"],
                           stdout=open(out, "w"), stderr=open(err, "w"))
        watched = lambda: [json.loads(l) for l in open(out).read().splitlines()]
        types = lambda: [e["eventType"] for e in watched()]
        wait_for(lambda: open(out).read().count("\n") >= 1, what="started")
        node.stop()
        node.start()
        # The journal is in memory: a run the watch never reached is a gap by
        # design (zctl-serve(1)), and the second run could otherwise end
        # within the watch's reconnect backoff.
        wait_for(lambda: types().count("started") == 2, what="the watch to reach the second run")
        node.stop()
        node.start()

        def third_run_led():
            # A cluster/members.changed (the new mesh address) may follow the leader announcement.
            t = types()
            return t.count("started") == 3 and "leadership.gained" in t[len(t) - t[::-1].index("started"):]
        wait_for(third_run_led, timeout=15, what="events after two restarts")
        node.stop()  # the stream carries everything up to the third run's node/stopping
        wait_for(lambda: [e["seq"] for e in watched()] == [e["seq"] for e in node.events()],
                 what="the watch to have seen every event")
        watch.send_signal(signal.SIGINT)
        watch.wait(timeout=5)
        seqs = [e["seq"] for e in watched()]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))  # no gap, no duplicate
        self.assertEqual(types().count("stopping"), 3)
        self.assertIn("reconnecting", open(err).read())

    def test_unreachable_node_exits_3(self):
        result = self.zctl("watch", "--node", f"http://127.0.0.1:{free_port()}", "--count", "1")
        self.assertEqual(result.returncode, 3)
        self.assertIn("cannot reach http://127.0.0.1:", result.stderr)

    def test_bad_url_is_a_usage_error(self):
        result = self.zctl("watch", "--node", "ftp://127.0.0.1:1")
        self.assertEqual(result.returncode, 2)
        self.assertIn("node URL must be http:// or https://HOST:PORT, got ftp://127.0.0.1:1", result.stderr)


if __name__ == "__main__":
    main()
