#!/usr/bin/env python3
"""`zctl sink test NAME`: the real binary sends synthetic events through one
sink of a config file with the real plugins -- the file sink, and the webhook
sink against an `http.server` receiver in this process that answers what the
test chooses -- and its report (`-o json`) and exit status are checked against
what actually arrived."""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import NodeTestCase, free_port, main, read_events


class Receiver:
    """An HTTP server on 127.0.0.1 that answers every POST with `status` and
    keeps the events of each request body (a JSON array)."""

    def __init__(self, status=200):
        self.status = status
        self.batches = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.batches.append(json.loads(body))
                reply = b"field 'x' missing" if receiver.status >= 400 else b""
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self):
        with self.lock:
            return [e for batch in self.batches for e in batch]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class SinkTestCli(NodeTestCase):
    def setUp(self):
        super().setUp()
        self.receivers = []

    def tearDown(self):
        for r in self.receivers:
            r.stop()
        super().tearDown()

    def receiver(self, status=200):
        r = Receiver(status)
        self.receivers.append(r)
        return r

    def write_config(self, sinks, node_id="n1"):
        """A config with node id `node_id`, a data dir in the test's directory and `sinks` (YAML text)."""
        path = os.path.join(self.workdir, "zctl.yaml")
        with open(path, "w") as f:
            f.write(f"node: {{ id: {node_id}, data_dir: {self.workdir}/data }}\nsinks:\n{sinks}")
        return path

    def file_sink(self, name="audit", extra=""):
        return (f"  - name: {name}\n    plugin: file\n{extra}"
                f"    config: {{ path: {self.workdir}/out/{name}.jsonl }}\n")

    def webhook_sink(self, url, name="hook", extra=""):
        return f"  - name: {name}\n    plugin: webhook\n{extra}    config: {{ url: \"{url}\", timeout: 2s }}\n"

    def sink_test(self, *args, timeout=30):
        """Runs `zctl sink test ARGS -o json`; returns (exit status, report or None, stderr)."""
        result = self.zctl("sink", "test", *args, "-o", "json", timeout=timeout)
        report = json.loads(result.stdout) if result.stdout.strip() else None
        return result.returncode, report, result.stderr

    def assert_synthetic(self, events, report, count, source_id="n1", sink="audit"):
        """`events` are exactly the run's synthetic events, seq 1..count, in order."""
        self.assertEqual([e["seq"] for e in events], list(range(1, count + 1)))
        for e in events:
            self.assertEqual(list(e)[:5], ["namespace", "eventType", "event_src_id", "timestamp", "seq"])
            self.assertEqual((e["namespace"], e["eventType"]), ("node", "sink_test"))
            self.assertEqual(e["event_src_id"], source_id)
            self.assertIs(e["test"], True)
            self.assertEqual(e["sink"], sink)
            self.assertEqual(e["runId"], report["runId"])
            self.assertEqual(e["count"], count)

    # ---------------------------------------------------------------- file

    def test_file_sink_gets_every_event_and_the_report_counts_them(self):
        # The sink's filter selects only cluster events: the test bypasses it.
        config = self.write_config(self.file_sink(extra="    filter: { namespaces: [cluster] }\n"))
        code, report, err = self.sink_test("audit", "--config", config, "--count", "25")
        self.assertEqual(code, 0, err)
        events = read_events(os.path.join(self.workdir, "out", "audit.jsonl"))
        self.assert_synthetic(events, report, 25)
        self.assertEqual(
            {k: report[k] for k in ("sink", "plugin", "sourceId", "count", "delivered", "failed", "undelivered",
                                    "timedOut", "verdict", "failures", "up", "downReason", "abandoned")},
            {"sink": "audit", "plugin": "file", "sourceId": "n1", "count": 25, "delivered": 25, "failed": 0,
             "undelivered": 0, "timedOut": False, "verdict": "pass", "failures": [], "up": True,
             "downReason": None, "abandoned": False})
        self.assertTrue(report["pluginPath"].endswith("/file.so"), report["pluginPath"])
        self.assertRegex(report["runId"], r"^[0-9a-f]{16}$")
        self.assertEqual(report["timeoutMs"], 30000)
        self.assertGreaterEqual(report["batches"], 1)
        latency = report["latency"]
        self.assertEqual(latency["count"], 25)
        self.assertLessEqual(latency["minMs"], latency["p50Ms"])
        self.assertLessEqual(latency["p50Ms"], latency["p99Ms"])
        self.assertLessEqual(latency["p99Ms"], latency["maxMs"])
        self.assertLessEqual(latency["maxMs"], report["elapsedMs"])
        self.assertGreater(report["eventsPerSecond"], 0)
        # Nothing of a node was created: no data dir, so no sequence file consumed.
        self.assertFalse(os.path.exists(os.path.join(self.workdir, "data")))

        # A second run appends a new run with its own id, again from seq 1.
        code, second, err = self.sink_test("audit", "--config", config, "--count", "3", "--id", "other")
        self.assertEqual(code, 0, err)
        events = read_events(os.path.join(self.workdir, "out", "audit.jsonl"))
        self.assertEqual(len(events), 28)
        self.assertNotEqual(second["runId"], report["runId"])
        self.assert_synthetic(events[25:], second, 3, source_id="other")

    def test_default_config_tests_the_default_file_sink_in_the_data_dir(self):
        data_dir = os.path.join(self.workdir, "d")
        code, report, err = self.sink_test("events", "--id", "n7", "--data-dir", data_dir, "--count", "4")
        self.assertEqual(code, 0, err)
        self.assertEqual(report["delivered"], 4)
        self.assert_synthetic(read_events(os.path.join(data_dir, "events.jsonl")), report, 4, "n7", "events")
        # Only the sink's file: no seq file, no lock, nothing else of a node.
        self.assertEqual(os.listdir(data_dir), ["events.jsonl"])

    def test_table_output(self):
        config = self.write_config(self.file_sink())
        result = self.zctl("sink", "test", "audit", "--config", config, "--count", "2", "-o", "table")
        self.assertEqual(result.returncode, 0, result.stderr)
        out = result.stdout
        self.assertRegex(out, r"(?m)^sink +audit \(plugin file \S+, \S+/file\.so\)$")
        self.assertRegex(out, r"(?m)^sent +2 events node/sink_test, seq 1\.\.2, event_src_id n1, runId [0-9a-f]{16}$")
        self.assertRegex(out, r"(?m)^delivered +2 in \d+ batch")
        self.assertRegex(out, r"(?m)^undelivered +0$")
        self.assertRegex(out, r"(?m)^latency +min \S+  p50 \S+  p99 \S+  max \S+  \(queued to delivered, 2 events\)$")
        self.assertRegex(out, r"(?m)^verdict +PASS$")
        self.assertNotIn("\033[", out)  # not a terminal: no colour

    # ---------------------------------------------------------------- webhook

    def test_webhook_answering_200_gets_every_event(self):
        r = self.receiver(200)
        config = self.write_config(self.webhook_sink(r.url))
        code, report, err = self.sink_test("hook", "--config", config, "--count", "12")
        self.assertEqual(code, 0, err)
        self.assertEqual((report["delivered"], report["failed"], report["undelivered"]), (12, 0, 0))
        self.assertEqual(report["batches"], len(r.batches))
        self.assert_synthetic(r.events(), report, 12, sink="hook")

    def test_webhook_answering_400_fails_every_event_without_retrying(self):
        r = self.receiver(400)
        config = self.write_config(self.webhook_sink(r.url))
        started = time.monotonic()
        code, report, err = self.sink_test("hook", "--config", config, "--count", "6")
        self.assertEqual(code, 1, err)
        self.assertLess(time.monotonic() - started, 10)  # a rejection is final: no waiting for the timeout
        self.assertEqual((report["delivered"], report["failed"], report["undelivered"]), (0, 6, 0))
        self.assertEqual(report["retried"], 0)
        self.assertFalse(report["timedOut"])
        self.assertEqual(report["verdict"], "fail")
        self.assertEqual(report["failures"],
                         ["6 events were given up on: rejected by the plugin or out of retries (the reason is in the log)"])
        self.assertEqual(len(r.events()), 6)  # each event was posted exactly once
        self.assertIn("answered 400", err)

    def test_unreachable_webhook_is_undelivered_at_the_timeout(self):
        port = free_port()  # nothing listens there: connection refused
        config = self.write_config(self.webhook_sink(f"http://127.0.0.1:{port}/hook",
                                                     extra="    retry: { initial: 20ms, max: 50ms }\n"))
        started = time.monotonic()
        code, report, err = self.sink_test("hook", "--config", config, "--count", "5", "--timeout", "700ms")
        took = time.monotonic() - started
        self.assertEqual(code, 1, err)
        self.assertGreaterEqual(took, 0.7)
        self.assertLess(took, 5)  # the timeout, plus at most the worker's stop grace
        self.assertEqual((report["delivered"], report["failed"], report["undelivered"]), (0, 0, 5))
        self.assertTrue(report["timedOut"])
        self.assertEqual(report["elapsedMs"], 700)
        self.assertGreaterEqual(report["retried"], 3)
        self.assertIn("5 events were not delivered within the 700ms timeout", report["failures"])
        # Three failures in a row make the sink unhealthy, with the plugin's reason.
        self.assertFalse(report["up"])
        self.assertIn(f"127.0.0.1:{port}", report["downReason"])
        self.assertIn("refused", report["downReason"].lower())
        self.assertEqual(report["unhealthyReasons"], [report["downReason"]])

    def test_unreachable_webhook_out_of_retries_is_failed(self):
        port = free_port()
        config = self.write_config(self.webhook_sink(
            f"http://127.0.0.1:{port}/hook",
            extra="    queue: { batch_max: 1 }\n    retry: { initial: 1ms, max: 2ms, max_attempts: 2 }\n"))
        code, report, err = self.sink_test("hook", "--config", config, "--count", "3", "--timeout", "20s")
        self.assertEqual(code, 1, err)
        self.assertEqual((report["delivered"], report["failed"], report["undelivered"]), (0, 3, 0))
        self.assertFalse(report["timedOut"])
        self.assertEqual(report["retried"], 6)  # two failed attempts for each event, one per batch
        self.assertIn("giving up on 1 event(s) after 2 attempts", err)

    # ---------------------------------------------------------------- errors

    def test_unknown_sink_is_a_usage_error_naming_the_configured_sinks(self):
        config = self.write_config(self.file_sink("audit") + self.webhook_sink("http://127.0.0.1:1/", "siem"))
        code, report, err = self.sink_test("audti", "--config", config)
        self.assertEqual(code, 2, err)
        self.assertIsNone(report)
        self.assertEqual(err, f"zctl sink test: no sink named 'audti' in {config}; configured sinks: audit, siem\n")
        self.assertFalse(os.path.exists(os.path.join(self.workdir, "out")))

        code, _, err = self.sink_test("audit")  # the default configuration has only 'events'
        self.assertEqual(code, 2, err)
        self.assertIn("no sink named 'audit' in the default configuration (no --config); configured sinks: events",
                      err)

        empty = os.path.join(self.workdir, "empty.yaml")
        with open(empty, "w") as f:
            f.write("sinks: []\n")
        code, _, err = self.sink_test("audit", "--config", empty)
        self.assertEqual(code, 2, err)
        self.assertIn(f"no sink named 'audit': {empty} configures no sinks", err)

    def test_sink_config_the_plugin_rejects_is_reported_with_the_plugin_message(self):
        config = self.write_config(self.webhook_sink("ftp://example.com/x"))
        code, report, err = self.sink_test("hook", "--config", config)
        self.assertEqual(code, 1, err)  # as `zctl serve` and SPEC §3: a config that is invalid
        self.assertIsNone(report)
        self.assertIn("zctl sink test: cannot set up sink 'hook' (plugin webhook): invalid config: "
                      "'url' must start with http:// or https://", err)

    def test_missing_plugin_and_invalid_config_file(self):
        config = self.write_config("  - name: x\n    plugin: nosuch\n")
        code, _, err = self.sink_test("x", "--config", config)
        self.assertEqual(code, 1, err)
        self.assertIn("zctl sink test: cannot set up sink 'x': ", err)
        self.assertIn("nosuch", err)

        bad = os.path.join(self.workdir, "bad.yaml")
        with open(bad, "w") as f:
            f.write("sinks:\n  - name: audit\n    plugin: file\n    qeueu: {}\n")
        code, _, err = self.sink_test("audit", "--config", bad)
        self.assertEqual(code, 1, err)
        self.assertIn(f"{bad}:4:5: ", err)
        self.assertIn("configuration invalid (1 error)", err)

    def test_usage_errors(self):
        for args, message in [
            (["sink"], "A subcommand is required"),
            (["sink", "test"], "NAME is required"),
            (["sink", "test", "events", "--count", "0"], "--count"),
            (["sink", "test", "events", "--count", "1000001"], "--count"),
            (["sink", "test", "events", "--timeout", "soon"], "--timeout: expected a duration"),
            (["sink", "test", "events", "--timeout", "0s"], "--timeout: expected a duration above 0"),
            (["sink", "test", "events", "-o", "yaml"], "--output"),
            (["sink", "test", "events", "--config", os.path.join(self.workdir, "missing.yaml")], "--config"),
        ]:
            with self.subTest(args=args):
                extra = ["--data-dir", os.path.join(self.workdir, "never")] if args[:2] == ["sink", "test"] else []
                result = self.zctl(*args, *extra)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn(message, result.stderr)
                self.assertEqual(result.stdout, "")
        self.assertFalse(os.path.exists(os.path.join(self.workdir, "never")))


if __name__ == "__main__":
    main()
