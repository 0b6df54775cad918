#!/usr/bin/env python3
"""`zctl serve` end to end: start, events on disk, admin API, signals,
sequence numbers across restarts, and every start-up failure's message and
exit code."""

import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import time

from harness import NodeTestCase, TEST_PLUGIN_DIR, http_get, main, metric, read_events, wait_for


def node_event_types(path):
    """The node/* event types in a file sink's output (cluster events interleave by timing)."""
    return [e["eventType"] for e in read_events(path) if e["namespace"] == "node"]

def max_open_files(pid):
    """The soft RLIMIT_NOFILE of a running process."""
    with open(f"/proc/{pid}/limits") as f:
        return int(re.search(r"^Max open files\s+(\d+)", f.read(), re.M).group(1))


def descriptor_table_slots(pid):
    """The size of a process's descriptor table (not the descriptors open)."""
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^FDSize:\s+(\d+)", f.read(), re.M).group(1))


ENVELOPE = ["namespace", "eventType", "event_src_id", "timestamp", "seq"]
RFC3339_NANO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}[+-]\d{2}:\d{2}$")


def sink_config(name, plugin, config, extra=""):
    return f"""
  - name: {name}
    plugin: {plugin}
    config: {json.dumps(config)}
{extra}"""


class ServeTest(NodeTestCase):
    def test_default_node_writes_started_event_with_full_envelope(self):
        node = self.node("n1").start()
        self.assertIn("node 'n1' serving", node.stdout())
        self.assertIn(node.data_dir, node.stdout())
        status, _, body = node.get("/healthz")
        self.assertEqual(status, 200, body)
        events = wait_for(lambda: node.events(), what="events.jsonl")
        first = events[0]
        self.assertEqual(list(first.keys())[:5], ENVELOPE)
        self.assertEqual((first["namespace"], first["eventType"], first["event_src_id"], first["seq"]),
                         ("node", "started", "n1", 1))
        self.assertRegex(first["timestamp"], RFC3339_NANO)
        self.assertEqual(first["admin"], node.admin_url.removeprefix("http://"))

    def test_sigterm_stops_cleanly_and_seq_continues_contiguously_after_restart(self):
        node = self.node("n1").start()
        wait_for(lambda: node.get("/readyz")[0] == 200, what="ready")
        self.assertEqual(node.stop(), 0)
        events = node.events()
        self.assertEqual([(e["eventType"], e["seq"]) for e in events],
                         [("started", 1), ("state.has_leader", 2), ("leadership.gained", 3), ("stopping", 4)])
        self.assertEqual(events[-1]["reason"], "SIGTERM")
        node.start()
        wait_for(lambda: node.get("/readyz")[0] == 200, what="ready again")
        self.assertEqual(node.stop(), 0)
        self.assertEqual([e["seq"] for e in node.events()], list(range(1, 9)))

    def test_seq_is_never_reused_after_kill_9(self):
        node = self.node("n1").start()
        wait_for(lambda: node.events(), what="started event")
        node.proc.kill()
        node.proc.wait()
        node.start()
        node.stop()
        seqs = [e["seq"] for e in node.events()]
        self.assertEqual(seqs[0], 1)
        self.assertGreater(seqs[1], 1)
        self.assertEqual(seqs, sorted(set(seqs)))
        self.assertIn("after an unclean stop", node.stdout())

    def test_sighup_reopens_the_file_sink_for_logrotate(self):
        node = self.node("n1").start()
        # started, state.has_leader and leadership.gained written before the rotation
        wait_for(lambda: len(node.events()) == 3, what="the start-up events")
        rotated = node.events_file + ".1"
        os.rename(node.events_file, rotated)
        node.signal(signal.SIGHUP)
        wait_for(lambda: os.path.exists(node.events_file), what="file sink to reopen")
        node.stop()
        self.assertEqual([e["eventType"] for e in read_events(rotated)],
                         ["started", "state.has_leader", "leadership.gained"])
        self.assertEqual([e["eventType"] for e in node.events()], ["stopping"])

    def test_sighup_applies_a_changed_sink_config_and_keeps_unchanged_ones(self):
        other = os.path.join(self.workdir, "other.jsonl")
        moved = os.path.join(self.workdir, "moved.jsonl")
        config = "sinks:" + sink_config("main", "file", {"path": other})
        node = self.node("n1", config=config).start()
        wait_for(lambda: read_events(other), what="started in the first file")
        with open(node.config_path, "w") as f:
            f.write("sinks:" + sink_config("main", "file", {"path": moved}))
        node.signal(signal.SIGHUP)
        wait_for(lambda: "reconfigured" in node.stderr(), what="reload to apply")
        node.stop()
        self.assertEqual(node_event_types(other), ["started"])
        self.assertEqual(node_event_types(moved), ["stopping"])

    def test_sighup_cannot_move_a_spool_and_keeps_the_running_one(self):
        events = os.path.join(self.workdir, "events.jsonl")
        first, second = os.path.join(self.workdir, "spool-a"), os.path.join(self.workdir, "spool-b")
        node = self.node("n1", config="sinks:" + sink_config("main", "file", {"path": events},
                                                             f"    spool: {{ dir: {first} }}\n")).start()
        wait_for(lambda: read_events(events), what="started in the file")
        self.assertTrue(os.path.exists(os.path.join(first, "cursor")))
        with open(node.config_path, "w") as f:
            f.write("sinks:" + sink_config("main", "file", {"path": events}, f"    spool: {{ dir: {second} }}\n"))
        node.signal(signal.SIGHUP)
        wait_for(lambda: "spool settings cannot change on reload" in node.stderr(), what="the refusal")
        self.assertFalse(os.path.exists(second))
        self.assertEqual(node.stop(), 0)
        self.assertEqual(node_event_types(events), ["started", "stopping"])

    def test_shipped_example_configs_are_valid(self):
        source = os.environ.get("ZCTL_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
        examples = [os.path.join("examples", name) for name in sorted(os.listdir(os.path.join(source, "examples")))
                    if name.endswith(".yaml")]
        self.assertIn("examples/production.yaml", examples)
        for example in examples:
            with self.subTest(example=example):
                self.assert_example_config_valid(example)

    def test_sighup_with_an_invalid_config_keeps_running(self):
        node = self.node("n1", config="events: { journal_size: 10 }\n").start()
        with open(node.config_path, "w") as f:
            f.write("events: { journal_sise: 10 }\n")
        node.signal(signal.SIGHUP)
        wait_for(lambda: "keeping the running configuration" in node.stderr(), what="reload error")
        self.assertIn("did you mean 'journal_size'", node.stderr())
        self.assertEqual(node.get("/healthz")[0], 200)
        self.assertEqual(node.stop(), 0)

    def test_metrics_are_valid_prometheus_text(self):
        node = self.node("n1").start()
        status, headers, body = node.get("/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        self.assertIn('controller_events_total{namespace="node",type="started"} 1', body)
        self.assertIn('controller_sink_events_total{sink="events",result="delivered"}', body)
        self.assertIn('controller_sink_up{sink="events"} 1', body)
        self.assertIn('controller_sink_queue_events{sink="events"}', body)
        self.assertIn("controller_sink_delivery_seconds_bucket", body)
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool (Debian package prometheus) is required")
        check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_admin_errors_are_json_with_proper_status(self):
        node = self.node("n1").start()
        status, headers, body = node.get("/nope")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["error"], "not_found")
        status, _, body = node.get("/v1/events?since=abc")
        self.assertEqual(status, 400)
        self.assertIn("since", json.loads(body)["detail"])
        # Ready once the single-node cluster announced its validated leader.
        wait_for(lambda: node.get("/readyz")[0] == 200, what="/readyz 200")
        status, _, body = node.get("/v1/sinks")
        sinks = json.loads(body)
        self.assertEqual([(s["name"], s["plugin"], s["up"]) for s in sinks], [("events", "file", True)])

    def test_bearer_token_protects_everything_but_healthz(self):
        token_file = os.path.join(self.workdir, "token")
        with open(token_file, "w") as f:
            f.write("s3cret\n")
        node = self.node("n1", config=f"admin: {{ token_file: {token_file} }}\n").start()
        self.assertEqual(node.get("/healthz")[0], 200)
        status, headers, _ = node.get("/metrics")
        self.assertEqual(status, 401)
        self.assertEqual(headers.get("WWW-Authenticate"), "Bearer")
        self.assertEqual(node.get("/metrics", {"Authorization": "Bearer wrong!"})[0], 401)
        self.assertEqual(node.get("/metrics", {"Authorization": "Bearer s3cret"})[0], 200)
        self.assertEqual(node.get("/v1/events?since=0")[0], 401)
        watch = self.zctl("watch", "--node", node.admin_url, "--since", "0", "--count", "1", "-o", "json",
                          "--token-file", token_file)
        self.assertEqual(watch.returncode, 0, watch.stderr)
        self.assertEqual(json.loads(watch.stdout)["eventType"], "started")

    def test_sse_stream_replays_then_follows_live_through_curl(self):
        node = self.node("n1").start()
        out = os.path.join(self.workdir, "curl.out")
        curl = self.spawn(["curl", "-sN", node.admin_url + "/v1/events?since=0&namespace=node"],
                          stdout=open(out, "w"))
        wait_for(lambda: "event: node/started" in open(out).read(), what="replay of node/started")
        node.stop()
        curl.wait(timeout=5)
        text = open(out).read()
        blocks = [b for b in text.split("\n\n") if b.startswith("id:")]
        self.assertEqual(len(blocks), 2, text)
        stopping = next(e for e in node.events() if e["eventType"] == "stopping")
        self.assertTrue(blocks[1].startswith(f"id: {stopping['seq']}\nevent: node/stopping\ndata: {{"), blocks[1])
        data = json.loads(blocks[1].split("data: ", 1)[1])
        self.assertEqual(data, stopping)

    def test_live_stream_starts_by_telling_the_client_its_position(self):
        node = self.node("n1").start()
        # Ready: started (1), then the cluster's state.has_leader (2) and leadership.gained (3).
        wait_for(lambda: node.get("/readyz")[0] == 200, what="ready")
        out = subprocess.run(["curl", "-sN", "--max-time", "0.5", node.admin_url + "/v1/events?namespace=node"],
                             capture_output=True, text=True).stdout
        # Resuming from here after a drop loses nothing, even before any
        # event of the namespace asked for.
        self.assertEqual(out, "retry: 1000\n\nid: 3\n\n")

    def test_gap_is_announced_when_the_journal_no_longer_holds_events(self):
        node = self.node("n1", config="events: { journal_size: 1 }\n").start()
        node.stop()
        node.start()
        wait_for(lambda: node.get("/readyz")[0] == 200, what="ready")  # the second run's events are out
        text = subprocess.run(
            ["curl", "-sN", "--max-time", "1", node.admin_url + "/v1/events?since=0"], capture_output=True, text=True
        ).stdout
        # The journal holds only the newest event; everything before it is the gap.
        gap = re.search(r'event: gap\ndata: \{"from":1,"to":(\d+),"oldest":(\d+)\}', text)
        self.assertIsNotNone(gap, text)
        newest = int(gap.group(2))
        self.assertEqual(int(gap.group(1)), newest - 1)
        self.assertGreaterEqual(newest, 5, text)  # after the first run's 3 events and its stopping
        self.assertEqual([b.split("\n")[0] for b in text.split("\n\n") if b.startswith("id:")], [f"id: {newest}"])

    def test_tells_a_service_manager_when_ready_reloading_and_stopping(self):
        path = os.path.join(self.workdir, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)
        try:
            node = self.node("n1", env={"NOTIFY_SOCKET": path}).start()
            ready = sock.recv(512).decode()
            self.assertTrue(ready.startswith("READY=1\nSTATUS=serving: mesh 127.0.0.1:"), ready)
            self.assertIn(", admin API 127.0.0.1:", ready)
            self.assertIn(", leader n1", ready)  # READY=1 waits for the first leader state
            self.assertEqual(node.get("/healthz")[0], 200)  # ready really means serving
            self.assertEqual(node.get("/readyz")[0], 200)
            node.signal(signal.SIGHUP)
            self.assertTrue(sock.recv(512).decode().startswith("RELOADING=1"))
            self.assertTrue(sock.recv(512).decode().startswith("READY=1"))
            node.stop()
            self.assertTrue(sock.recv(512).decode().startswith("STOPPING=1"))
        finally:
            sock.close()

    # --- start-up failures ---------------------------------------------------

    def test_invalid_config_reports_line_and_column_and_exits_1(self):
        node = self.node("n1", config="mesh:\n  stray:\n    gracePeriod: 5s\nevents: { journal_size: lots }\n")
        code, _, err = node.run_to_exit()
        self.assertEqual(code, 1)
        self.assertRegex(err, r"n1\.yaml:3:5: mesh\.stray: unknown key 'gracePeriod' \(did you mean 'grace_period'\?\)")
        self.assertRegex(err, r"n1\.yaml:4:\d+: events\.journal_size: ")

    def test_invalid_address_flags_are_config_errors_naming_the_flag(self):
        for flags, expected in [
            (["--mesh", "bogus"], "--mesh: invalid address 'bogus': missing ':PORT'"),
            (["--admin", "ctrl1.example.com:1"], "--admin: invalid address 'ctrl1.example.com:1': a listen address needs"),
            (["--raft", "0.0.0.0:6263"], "--raft: invalid address '0.0.0.0:6263': the raft address is what the other members dial"),
            (["--raft", "127.0.0.1:0"], "--raft: invalid address '127.0.0.1:0': the raft address is stored in the log"),
            (["--join", "10.0.0.1:0"], "--join: invalid address '10.0.0.1:0': port 0 is only valid for listen addresses"),
        ]:
            with self.subTest(flags=flags):
                node = self.node("flags", extra_args=flags)
                code, _, err = node.run_to_exit()
                self.assertEqual(code, 1, err)
                self.assertIn(expected, err)
                self.assertIn("configuration invalid", err)

    def test_invalid_yaml_exits_1(self):
        node = self.node("n1", config="sinks: [ {name: x\n")
        code, _, err = node.run_to_exit()
        self.assertEqual(code, 1)
        self.assertRegex(err, r"n1\.yaml:\d+:\d+: ")

    def test_descriptor_limit_is_raised_for_max_pending_and_the_table_reserved_at_start(self):
        # A soft limit of 1024, what many service managers and shells give.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard < 4096:
            self.skipTest(f"RLIMIT_NOFILE hard limit {hard} is below what the test needs")
        config = "mesh:\n  max_pending: 3000\n"
        node = self.node("n1", config=config, nofile=(1024, 4096)).start()
        wanted = 3000 + 1024
        self.assertEqual(max_open_files(node.proc.pid), wanted)
        # The table is grown once at start, not doubling under a flood of accepts.
        self.assertGreaterEqual(descriptor_table_slots(node.proc.pid), wanted)
        self.assertIn("soft RLIMIT_NOFILE raised from 1024 to 4024", node.stderr())
        self.assertNotIn("EMFILE", node.stderr())

        short = self.node("n2", config=config, nofile=(1024, 2048)).start()
        self.assertEqual(max_open_files(short.proc.pid), 2048)
        self.assertIn("RLIMIT_NOFILE (soft 2048, hard 2048) is below mesh.max_pending 3000 + 1024", short.stderr())
        self.assertIn("accept() fails with EMFILE once pending connections and the node's other descriptors "
                      "(tens when idle) reach 2048", short.stderr())

    def test_port_in_use_exits_4_naming_the_address(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            node = self.node("n1", extra_args=["--admin", f"127.0.0.1:{port}"])
            code, _, err = node.run_to_exit()
        self.assertEqual(code, 4)
        self.assertIn(f"admin API cannot listen on 127.0.0.1:{port}", err)
        self.assertIn("Address already in use", err)

    def test_unwritable_data_dir_exits_4(self):
        blocker = os.path.join(self.workdir, "not-a-dir")
        open(blocker, "w").close()
        node = self.node("n1")
        node.data_dir = os.path.join(blocker, "data")
        code, _, err = node.run_to_exit()
        self.assertEqual(code, 4)
        self.assertIn("cannot create data dir", err)

    def test_second_node_on_the_same_data_dir_is_refused(self):
        first = self.node("n1").start()
        second = self.node("n1")
        code, _, err = second.run_to_exit()
        self.assertEqual(code, 4)
        self.assertIn(f"in use by another zctl node (pid {first.proc.pid})", err)

    def test_missing_plugin_exits_1(self):
        node = self.node("n1", config="sinks:" + sink_config("x", "nope", {}))
        code, _, err = node.run_to_exit()
        self.assertEqual(code, 1)
        self.assertIn("sink 'x': nope.so: plugin 'nope' not found in plugins.path", err)

    def test_plugin_config_rejected_by_validate_exits_1(self):
        node = self.node("n1", config="sinks:" + sink_config("f", "file", {"path": "/tmp/x", "max_backups": -1}))
        code, _, err = node.run_to_exit()
        self.assertEqual(code, 1)
        self.assertIn("sink 'f' (plugin file): invalid config: ", err)
        self.assertIn("max_backups", err)


class CliTest(NodeTestCase):
    def test_global_options_work_after_the_command(self):
        config = os.path.join(self.workdir, "ok.yaml")
        with open(config, "w") as f:
            f.write("events: { journal_size: 10 }\n")
        result = self.zctl("config", "check", config, "--log-level", "debug", "--log-format", "json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("valid (no sinks: the default file sink writes <data_dir>/events.jsonl)", result.stdout)

    def test_config_check_and_plugins_list_exit_1_on_an_invalid_config(self):
        config = os.path.join(self.workdir, "bad.yaml")
        with open(config, "w") as f:
            f.write("sinks:\n  - name: a\n    plugin: file\n    queue: { when_full: explode }\n")
        for args in (["config", "check", config], ["plugins", "list", "-c", config]):
            with self.subTest(args=args):
                result = self.zctl(*args)
                self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
                self.assertRegex(result.stderr, r"bad\.yaml:4:\d+: sinks\[0\]\.queue\.when_full: ")

    def test_usage_errors_exit_2(self):
        self.assertEqual(self.zctl("serve", "--no-such-flag").returncode, 2)
        self.assertEqual(self.zctl().returncode, 2)
        self.assertEqual(self.zctl("watch", "-o", "yaml").returncode, 2)


class PluginFailureTest(NodeTestCase):
    """Misbehaving plugins, loaded for real from the test plugin directory."""

    def config(self, sinks):
        dirs = f"{TEST_PLUGIN_DIR}, {os.environ['ZCTL_PLUGIN_DIR']}"
        return f"plugins: {{ path: [{dirs}] }}\nsinks:" + "".join(sinks)

    def file_sink(self):
        return sink_config("events", "file", {"path": os.path.join(self.workdir, "events.jsonl")})

    def test_create_failure_exits_1_with_the_plugins_reason(self):
        node = self.node("n1", config=self.config([sink_config("r", "recording", {"path": "/dev/null", "fail_create": True})]))
        code, _, err = node.run_to_exit()
        self.assertEqual(code, 1)
        self.assertIn("sink 'r' (plugin recording): ", err)

    def test_refused_plugins_are_reported_by_plugins_info(self):
        cases = {
            "abi_major.so": "has a different major version than this host",
            "abi_minor.so": "is newer than this host's",
            "small_struct.so": "descriptor is 8 bytes, ABI 1.0 needs at least",
            "missing_fn.so": "lacks required function(s): emit",
            "null_entry.so": "entry symbol returned no descriptor",
            "no_entry.so": "missing entry symbol 'zctl_sink_plugin_entry'",
            "not_a_library.so": "not a loadable shared library",
        }
        for name, reason in cases.items():
            with self.subTest(plugin=name):
                result = self.zctl("plugins", "info", os.path.join(TEST_PLUGIN_DIR, name))
                self.assertEqual(result.returncode, 1, result.stdout)
                self.assertIn("INVALID: ", result.stdout)
                self.assertIn(reason, result.stdout)

    def test_world_writable_plugin_is_refused(self):
        copy = os.path.join(self.workdir, "recording.so")
        shutil.copy(os.path.join(TEST_PLUGIN_DIR, "recording.so"), copy)
        os.chmod(copy, 0o666)
        result = self.zctl("plugins", "info", copy)
        self.assertEqual(result.returncode, 1)
        self.assertIn("group- or world-writable", result.stdout)
        os.chmod(copy, 0o644)
        result = self.zctl("plugins", "info", copy)
        self.assertEqual(result.returncode, 0, result.stdout)
        self.assertIn("recording", result.stdout)

    def test_hung_and_throwing_sinks_do_not_stop_the_node_or_other_sinks(self):
        hung = sink_config("hung", "recording", {"path": os.path.join(self.workdir, "hung.jsonl"), "hang_ms": 60000},
                           "    call_timeout: 200ms\n    queue: { max_events: 2, when_full: drop_newest }")
        thrower = sink_config("thrower", "recording",
                              {"path": os.path.join(self.workdir, "t.jsonl"), "throw_in_emit": True},
                              "    retry: { initial: 10ms, max: 20ms }")
        garbage = sink_config("garbage", "recording",
                              {"path": os.path.join(self.workdir, "g.jsonl"), "garbage_code": True},
                              "    retry: { initial: 10ms, max: 20ms }")
        events_path = os.path.join(self.workdir, "events.jsonl")
        node = self.node("n1", config=self.config([hung, thrower, garbage, self.file_sink()])).start()

        def announced():
            return {(e["eventType"], e.get("sink")) for e in read_events(events_path) if e["namespace"] == "sink"}

        wait_for(lambda: {("unhealthy", "hung"), ("unhealthy", "thrower"), ("unhealthy", "garbage")} <= announced(),
                 timeout=10, what="three sink/unhealthy events")
        unhealthy = {e["sink"]: e["reason"] for e in read_events(events_path) if e["eventType"] == "unhealthy"}
        self.assertIn("plugin call 'emit' has not returned", unhealthy["hung"])
        self.assertIn("invalid result code 77", unhealthy["garbage"])
        self.assertEqual(node.get("/healthz")[0], 200)
        _, _, metrics = node.get("/metrics")
        self.assertIn('controller_sink_up{sink="hung"} 0', metrics)
        self.assertIn('controller_sink_up{sink="events"} 1', metrics)
        self.assertRegex(metrics, r'controller_sink_events_total\{sink="thrower",result="retried"\} [1-9]')
        # The file sink keeps receiving everything, including the announcements.
        self.assertEqual(read_events(events_path)[0]["eventType"], "started")
        start = time.monotonic()
        self.assertEqual(node.stop(timeout=15), 0)
        self.assertLess(time.monotonic() - start, 10)
        self.assertIn("sink hung: plugin call 'emit' did not return; abandoning the sink's worker", node.stderr())
        # The healthy sinks drained in parallel and were not abandoned with it.
        self.assertNotIn("sink events: plugin call", node.stderr())
        self.assertIn("stopping", [e["eventType"] for e in read_events(events_path)])

    def test_async_plugin_delivers_through_completion(self):
        path = os.path.join(self.workdir, "async.jsonl")
        node = self.node("n1", config=self.config([sink_config("a", "recording", {"path": path, "async": True})])).start()
        # started, then the single voter's state.has_leader and leadership.gained
        wait_for(lambda: len(read_events(path)) == 3, what="async delivery")
        wait_for(lambda: 'controller_sink_events_total{sink="a",result="delivered"} 3' in node.get("/metrics")[2],
                 what="completions counted")
        node.stop()
        self.assertEqual([e["eventType"] for e in read_events(path)],
                         ["started", "state.has_leader", "leadership.gained", "stopping"])


class AdminTlsTest(NodeTestCase):
    def start_tls_node(self, pki, require_client_cert):
        config = (f"admin:\n  tls: {{ cert_file: {pki}/server.pem, key_file: {pki}/server.key, ca_file: {pki}/ca.pem,"
                  f" require_client_cert: {'true' if require_client_cert else 'false'} }}\n")
        return self.node("n1", config=config).start()

    @staticmethod
    def curl(pki, url, cert=None, *extra):
        args = ["curl", "-sS", "--max-time", "5", "--cacert", os.path.join(pki, "ca.pem")]
        if cert:
            args += ["--cert", os.path.join(pki, f"{cert}.pem"), "--key", os.path.join(pki, f"{cert}.key")]
        return subprocess.run(args + list(extra) + [url], capture_output=True, text=True)

    def test_https_only_for_clients_with_a_trusted_certificate(self):
        pki = self.make_pki()
        node = self.start_tls_node(pki, require_client_cert=True)
        self.assertRegex(node.admin_url, r"^https://127\.0\.0\.1:\d+$")
        wait_for(lambda: '"status":"ready"' in self.curl(pki, node.admin_url + "/readyz", "client").stdout,
                 what="ready over HTTPS")
        # The event stream over TLS: replayed, then live until the node stops,
        # which curl sees as the end of the close-delimited body (exit 0).
        out = os.path.join(self.workdir, "sse.out")
        sse = self.spawn(["curl", "-sSN", "--cacert", os.path.join(pki, "ca.pem"),
                          "--cert", os.path.join(pki, "client.pem"), "--key", os.path.join(pki, "client.key"),
                          node.admin_url + "/v1/events?since=0&namespace=node"],
                         stdout=open(out, "w"), stderr=subprocess.PIPE)

        refused = [self.curl(pki, node.admin_url + "/healthz"),                # no client certificate
                   self.curl(pki, node.admin_url + "/healthz", "rogue"),       # one the CA never signed
                   subprocess.run(["curl", "-sS", "--max-time", "5",            # plain HTTP to the HTTPS port
                                   node.admin_url.replace("https://", "http://") + "/healthz"],
                                  capture_output=True, text=True)]
        for result in refused:
            self.assertNotEqual(result.returncode, 0, result.stdout)
            self.assertNotIn("serving", result.stdout)
        wait_for(lambda: "event: node/started" in open(out).read(), what="the stream over TLS")
        metrics = self.curl(pki, node.admin_url + "/metrics", "client").stdout
        self.assertEqual(metric(metrics, "controller_admin_tls_handshake_failures_total"), 3)
        self.assertEqual(node.stop(), 0)
        _, err = sse.communicate(timeout=5)
        self.assertEqual(sse.returncode, 0, err)
        self.assertIn("event: node/stopping", open(out).read())
        self.assertIn("admin API: TLS handshake with 127.0.0.1:", node.stderr())

    def test_zctl_watch_and_cluster_speak_https_with_a_client_certificate(self):
        pki = self.make_pki()
        node = self.start_tls_node(pki, require_client_cert=True)
        files = ["--ca-file", os.path.join(pki, "ca.pem"), "--cert-file", os.path.join(pki, "client.pem"),
                 "--key-file", os.path.join(pki, "client.key")]
        watch = self.zctl("watch", "--node", node.admin_url, *files, "--since", "0", "--count", "1", "-o", "json")
        self.assertEqual(watch.returncode, 0, watch.stderr)
        self.assertEqual(json.loads(watch.stdout)["eventType"], "started")
        listed = self.zctl("cluster", "list", "--node", node.admin_url, *files, "-o", "json")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertEqual([m["id"] for m in json.loads(listed.stdout)["members"]], ["n1"])
        # The node's certificate is verified: not against the system's trust store.
        untrusted = self.zctl("cluster", "list", "--node", node.admin_url, *files[2:])
        self.assertEqual(untrusted.returncode, 3, untrusted.stderr)
        self.assertIn("TLS handshake: certificate verify failed", untrusted.stderr)
        untrusted = self.zctl("watch", "--node", node.admin_url, *files[2:], "--count", "1")
        self.assertEqual(untrusted.returncode, 3, untrusted.stderr)
        self.assertIn("TLS handshake: certificate verify failed", untrusted.stderr)
        # Nor does the node let a client in without its own certificate.
        anonymous = self.zctl("cluster", "list", "--node", node.admin_url, *files[:2])
        self.assertEqual(anonymous.returncode, 3, anonymous.stderr)
        # A certificate without its key is a usage error, before any connection.
        halves = self.zctl("watch", "--node", node.admin_url, *files[:4])
        self.assertEqual(halves.returncode, 2, halves.stderr)
        self.assertIn("--cert-file requires --key-file", halves.stderr)
        # ... and a certificate for 127.0.0.1 does not pass for another name.
        renamed = self.zctl("cluster", "list", "--node", node.admin_url.replace("127.0.0.1", "localhost"), *files)
        self.assertEqual(renamed.returncode, 3, renamed.stderr)
        self.assertIn("certificate verify failed", renamed.stderr)

    def test_without_required_client_certificates_any_tls_client_is_served(self):
        pki = self.make_pki()
        node = self.start_tls_node(pki, require_client_cert=False)
        result = self.curl(pki, node.admin_url + "/healthz")
        self.assertEqual((result.returncode, result.stdout), (0, '{"status":"serving"}'), result.stderr)
        # The node ends each TLS session with close_notify: a strict client
        # (ragged EOFs not suppressed) reads a clean end after the answer.
        host, port = node.admin_url.removeprefix("https://").rsplit(":", 1)
        context = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem"))
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=host, suppress_ragged_eofs=False) as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: zctl\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(4096):  # SSLEOFError on a close without close_notify
                answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK"), answer)

    def test_unreadable_admin_tls_files_are_a_configuration_error(self):
        node = self.node("n1", config="admin:\n  tls: { cert_file: /nonexistent.pem, key_file: /nonexistent.key,"
                                      " require_client_cert: false }\n")
        code, _, err = node.run_to_exit()
        self.assertEqual(code, 1, err)
        self.assertIn("admin.tls: cannot read /nonexistent.pem", err)


if __name__ == "__main__":
    main()
