#!/usr/bin/env python3
"""The kafka sink against librdkafka's mock cluster: `zctl_kafka_mock` (built
from tests/helpers) hosts it on loopback ports and takes commands on stdin to
inject produce errors and take brokers down and up; `kcat -C`, an independent
Kafka client, reads back what arrived. A real `zctl serve` emits the events:
node/started, the cluster events of its single-node cluster, one
connection/protocol_error per garbage connection to its mesh port,
node/stopping. A file sink on the same node is the reference for which events
Kafka must have received, byte for byte. The exactly-once completion of each
batch is checked through the C ABI with ctypes, where a test can make the
batches."""

import ctypes
import json
import os
import shutil
import socket
import subprocess
import threading

from sink_abi import BatchT, Event, Host, StatusT, load_plugin
from harness import BUILD_DIR, NodeTestCase, main, metric, read_events, wait_for

MOCK = os.environ.get("ZCTL_KAFKA_MOCK") or os.path.join(BUILD_DIR or "build", "bin", "zctl_kafka_mock")
KCAT = shutil.which("kcat") or "kcat"

ZCTL_SINK_OK, ZCTL_SINK_RETRY, ZCTL_SINK_REJECT, ZCTL_SINK_PENDING = 0, 1, 2, 3


class MockCluster:
    """One zctl_kafka_mock process: the bootstrap servers it printed, and its commands."""

    def __init__(self, test, brokers=1):
        self.stderr_path = os.path.join(test.workdir, f"kafka-mock-{len(test._procs)}.stderr")
        self.proc = test.spawn([MOCK, "--brokers", str(brokers)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=open(self.stderr_path, "w"), text=True, bufsize=1)
        self.bootstrap = self.proc.stdout.readline().strip()
        if not self.bootstrap:
            raise AssertionError(f"{MOCK} printed no bootstrap servers: {open(self.stderr_path).read()}")

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != "ok":
            raise AssertionError(f"mock cluster: {line!r} -> {answer!r}")

    def consume(self, topics):
        """Every message of each topic, read with kcat from the beginning to the end, in parallel."""
        procs = {t: subprocess.Popen([KCAT, "-C", "-b", self.bootstrap, "-t", t, "-o", "beginning", "-e", "-q", "-J",
                                      "-X", "fetch.wait.max.ms=10"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for t in topics}
        messages = []
        for topic, proc in procs.items():
            out, err = proc.communicate(timeout=20)
            if proc.returncode != 0:
                raise AssertionError(f"kcat -C -t {topic} exited {proc.returncode}: {err}")
            messages += [json.loads(line) for line in out.splitlines() if line.strip()]
        return messages


class Instance:
    """kafka.so loaded with ctypes and one instance created with a recording host: every
    host->complete and host->log call is kept, with the thread lock the callbacks take."""

    def __init__(self, config):
        self.plugin = load_plugin("kafka")
        self.completions, self.logs = [], []
        self.lock = threading.Lock()

        def on_log(_ctx, level, msg):
            with self.lock:
                self.logs.append((level, msg.decode()))

        def on_complete(_ctx, batch_id, result, _retry_after, reason):
            with self.lock:
                self.completions.append((batch_id, result, reason.decode() if reason else ""))

        self._callbacks = (Host.LOG(on_log), Host.COMPLETE(on_complete))  # kept alive while the instance lives
        self.host = Host(ctypes.sizeof(Host), 0, None, *self._callbacks)
        err = ctypes.create_string_buffer(512)
        self.instance = ctypes.c_void_p()
        rc = self.plugin.create(json.dumps(config).encode(), ctypes.byref(self.host), ctypes.byref(self.instance),
                                err, 512)
        if rc != ZCTL_SINK_OK:
            raise AssertionError(f"create: {rc} {err.value.decode()}")

    def emit(self, batch_id, payloads, namespace=b"node", event_type=b"started"):
        keep = [json.dumps(p).encode() if not isinstance(p, bytes) else p for p in payloads]
        events = (Event * max(len(keep), 1))(*[Event(b, len(b), 0, i + 1, namespace, event_type)
                                               for i, b in enumerate(keep)])
        batch = BatchT(ctypes.sizeof(BatchT), len(keep), events, batch_id, 1, 0)
        reason = ctypes.create_string_buffer(512)
        status = StatusT(ctypes.sizeof(StatusT), 0, ctypes.cast(reason, ctypes.c_char_p), 512, 0)
        return self.plugin.emit(self.instance, ctypes.byref(batch), ctypes.byref(status)), reason.value.decode()

    def completed(self, batch_id):
        with self.lock:
            return [c for c in self.completions if c[0] == batch_id]

    def destroy(self):
        if self.instance:
            self.plugin.destroy(self.instance)
            self.instance = None


class KafkaTest(NodeTestCase):
    def setUp(self):
        super().setUp()
        self.instances = []

    def tearDown(self):
        for i in self.instances:
            i.destroy()
        super().tearDown()

    def mock(self, **kwargs):
        return MockCluster(self, **kwargs)

    def instance(self, config):
        i = Instance(config)
        self.instances.append(i)
        return i

    def start_node(self, config, retry="{ initial: 20ms, max: 100ms }", node_id="n1"):
        self.reference = os.path.join(self.workdir, f"{node_id}-reference.jsonl")
        text = f"""sinks:
  - name: k
    plugin: kafka
    retry: {retry}
    config: {json.dumps(config)}
  - name: reference
    plugin: file
    config: {{ path: {self.reference} }}
"""
        return self.node(node_id, config=text).start()

    def counted(self, node, result):
        return metric(self.metrics(node), "controller_sink_events_total", sink="k", result=result) or 0

    def reference_lines(self):
        """The reference sink's lines: the exact event bytes every sink received."""
        if not os.path.exists(self.reference):
            return []
        with open(self.reference) as f:
            return [line.rstrip("\n") for line in f if line.strip()]

    def wait_until_delivered(self, node, what="every event to be delivered"):
        """Until the kafka sink counted as many events delivered and failed as the reference has."""
        wait_for(lambda: self.counted(node, "delivered") + self.counted(node, "failed") >= len(self.reference_lines()),
                 timeout=20, what=what)

    def assert_every_event_arrived(self, mock, topic_of, key_of, skip_seqs=()):
        """Each reference event is in its topic at least once, with the exact bytes and its key."""
        lines = [line for line in self.reference_lines() if json.loads(line)["seq"] not in skip_seqs]
        topics = sorted({topic_of(json.loads(line)) for line in lines})
        got = mock.consume(topics)
        by_payload = {}
        for m in got:
            by_payload.setdefault(m["payload"], []).append(m)
        for line in lines:
            event = json.loads(line)
            with self.subTest(seq=event["seq"], type=event["eventType"]):
                self.assertIn(line, by_payload, "the event arrived with exactly the bytes the file sink got")
                for m in by_payload[line]:
                    self.assertEqual(m["topic"], topic_of(event))
                    self.assertEqual(m["key"], key_of(event))
        return got

    # --- delivery -------------------------------------------------------------

    def test_every_event_arrives_with_its_bytes_in_its_namespace_topic_keyed_by_node(self):
        mock = self.mock()
        node = self.start_node({"brokers": mock.bootstrap})
        wait_for(lambda: node.get("/readyz")[0] == 200, what="the leader announcement")
        self.poke(node, 5)
        wait_for(lambda: len(self.reference_lines()) >= 8, what="the poked events")
        self.wait_until_delivered(node)
        self.assertEqual(node.stop(), 0)
        got = self.assert_every_event_arrived(mock, lambda e: "zctl." + e["namespace"], lambda e: "n1")
        namespaces = {m["topic"] for m in got}
        self.assertTrue({"zctl.node", "zctl.cluster", "zctl.connection"} <= namespaces, namespaces)
        types = [json.loads(m["payload"])["eventType"] for m in got if m["topic"] == "zctl.connection"]
        self.assertEqual(types.count("protocol_error"), 5)
        # One key, one partition: a node's events keep their order in Kafka.
        self.assertEqual(len({(m["topic"], m["partition"]) for m in got if m["topic"] == "zctl.node"}), 1)
        seqs = [json.loads(m["payload"])["seq"] for m in sorted(got, key=lambda m: m["offset"])
                if m["topic"] == "zctl.node"]
        self.assertEqual(seqs, sorted(seqs))

    def test_topic_and_key_templates_compression_and_passed_through_properties(self):
        mock = self.mock()
        node = self.start_node({
            "brokers": [mock.bootstrap], "topic": "ev-{namespace}.{eventType}", "key": "{remoteAddr}",
            "compression": "lz4", "acks": 1, "client_id": "zctl-test",
            "librdkafka": {"linger.ms": 2, "batch.num.messages": 500, "socket.nagle.disable": False},
        })
        wait_for(lambda: node.get("/readyz")[0] == 200, what="the leader announcement")
        self.poke(node, 3)
        wait_for(lambda: len(self.reference_lines()) >= 6, what="the poked events")
        self.wait_until_delivered(node)
        self.assertEqual(node.stop(), 0)
        # A field the event does not have renders empty, and an empty key is no key.
        got = self.assert_every_event_arrived(mock, lambda e: f"ev-{e['namespace']}.{e['eventType']}",
                                              lambda e: e.get("remoteAddr"))
        self.assertIn("ev-connection.protocol_error", {m["topic"] for m in got})
        self.assertIn("ev-cluster.state.has_leader", {m["topic"] for m in got})
        for m in got:
            if m["topic"] == "ev-connection.protocol_error":
                self.assertRegex(m["key"], r"^127\.0\.0\.1:\d+$")

    # --- errors -----------------------------------------------------------------

    def test_retriable_produce_errors_are_retried_inside_librdkafka_and_delivered(self):
        mock = self.mock()
        mock.command("errors produce NOT_ENOUGH_REPLICAS REQUEST_TIMED_OUT NOT_LEADER_FOR_PARTITION")
        node = self.start_node({"brokers": mock.bootstrap, "librdkafka": {"retry.backoff.ms": 10}})
        wait_for(lambda: node.get("/readyz")[0] == 200, what="the leader announcement")
        self.poke(node, 2)
        wait_for(lambda: len(self.reference_lines()) >= 5, what="the poked events")
        self.wait_until_delivered(node)
        self.assertEqual(self.counted(node, "retried"), 0, "librdkafka's own retries succeeded")
        self.assertEqual(self.counted(node, "failed"), 0)
        self.assertEqual(node.stop(), 0)
        self.assert_every_event_arrived(mock, lambda e: "zctl." + e["namespace"], lambda e: "n1")

    def test_a_retriable_error_librdkafka_gives_up_on_is_retried_by_the_host_until_delivered(self):
        mock = self.mock()
        mock.command("errors produce NOT_ENOUGH_REPLICAS NOT_ENOUGH_REPLICAS")
        node = self.start_node({"brokers": mock.bootstrap, "librdkafka": {"message.send.max.retries": 0}})
        wait_for(lambda: node.get("/readyz")[0] == 200, what="the leader announcement")
        self.poke(node, 2)
        wait_for(lambda: len(self.reference_lines()) >= 5, what="the poked events")
        self.wait_until_delivered(node)
        self.assertGreaterEqual(self.counted(node, "retried"), 2)
        self.assertEqual(self.counted(node, "failed"), 0)
        self.assertEqual(node.stop(), 0)
        self.assertIn("Broker: Not enough in-sync replicas (NOT_ENOUGH_REPLICAS)", node.stderr())
        self.assert_every_event_arrived(mock, lambda e: "zctl." + e["namespace"], lambda e: "n1")

    def test_message_too_large_is_rejected_once_and_the_node_keeps_serving_and_delivering(self):
        mock = self.mock()
        mock.command("errors produce MSG_SIZE_TOO_LARGE")
        node = self.start_node({"brokers": mock.bootstrap})
        dropped = wait_for(lambda: [e for e in read_events(self.reference) if e["eventType"] == "dropped"],
                           what="the sink/dropped announcement")[0]
        self.assertEqual((dropped["sink"], dropped["reason"]), ("k", "rejected"))
        # The first batch is the one that got the error: the events from seq 1, as many as dropped.
        count = dropped["count"]
        self.assertGreaterEqual(count, 1)
        self.assertIn("Broker: Message size too large (MSG_SIZE_TOO_LARGE)", node.stderr())
        self.poke(node, 3)
        wait_for(lambda: len(self.reference_lines()) >= count + 4, what="the poked events")
        self.wait_until_delivered(node)
        self.assertEqual(self.counted(node, "failed"), count)
        self.assertEqual(self.counted(node, "retried"), 0, "a permanent error is never retried")
        self.assertEqual(node.get("/healthz")[0], 200)
        self.assertEqual(node.stop(), 0)
        self.assert_every_event_arrived(mock, lambda e: "zctl." + e["namespace"], lambda e: "n1",
                                        skip_seqs=range(1, count + 1))

    def test_a_broker_down_and_up_mid_stream_loses_nothing(self):
        mock = self.mock()
        node = self.start_node({"brokers": mock.bootstrap, "message_timeout": "300ms",
                                "librdkafka": {"reconnect.backoff.max.ms": 100}},
                               retry="{ initial: 50ms, max: 200ms }")
        wait_for(lambda: node.get("/readyz")[0] == 200, what="the leader announcement")
        self.poke(node, 2)
        wait_for(lambda: len(self.reference_lines()) >= 5, what="the first poked events")
        self.wait_until_delivered(node, "the events before the outage")
        mock.command("down -1")
        self.poke(node, 3)
        wait_for(lambda: self.counted(node, "retried") >= 3, what="attempts failing while the broker is down")
        mock.command("up -1")
        self.poke(node, 2)
        wait_for(lambda: len(self.reference_lines()) >= 10, what="the later poked events")
        self.wait_until_delivered(node, "every event after the broker is back")
        self.assertEqual(self.counted(node, "failed"), 0)
        self.assertEqual(node.stop(), 0)
        self.assertIn("Local: Message timed out (_MSG_TIMED_OUT)", node.stderr())
        got = self.assert_every_event_arrived(mock, lambda e: "zctl." + e["namespace"], lambda e: "n1")
        types = [json.loads(m["payload"])["eventType"] for m in got]
        self.assertGreaterEqual(types.count("protocol_error"), 7)

    def test_zctl_sink_test_reports_delivery_to_kafka(self):
        mock = self.mock()
        config = os.path.join(self.workdir, "sink-test.yaml")
        with open(config, "w") as f:
            f.write(f"node: {{ id: tester }}\nsinks:\n  - name: k\n    plugin: kafka\n"
                    f"    config: {json.dumps({'brokers': mock.bootstrap, 'key': '{event_src_id}-{seq}'})}\n")
        result = self.zctl("sink", "test", "k", "--config", config, "--count", "20", "-o", "json")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        got = [m for m in mock.consume(["zctl.node"]) if json.loads(m["payload"])["eventType"] == "sink_test"]
        self.assertEqual(sorted({json.loads(m["payload"])["seq"] for m in got}), list(range(1, 21)))
        for m in got:
            self.assertEqual(m["key"], f"tester-{json.loads(m['payload'])['seq']}")

    # --- the C ABI: one completion per batch, whatever happens ----------------------

    def test_each_batch_completes_exactly_once_through_the_c_abi(self):
        mock = self.mock()
        sink = self.instance({"brokers": mock.bootstrap, "topic": "abi.{remoteAddr}",
                              "librdkafka": {"message.max.bytes": 2000}})
        def ok(n):
            return {"namespace": "connection", "remoteAddr": "a1", "n": n}

        # Empty: done at once, nothing pending.
        self.assertEqual(sink.emit(1, []), (ZCTL_SINK_OK, ""))
        # Good messages: one OK once the broker acknowledged all of them.
        self.assertEqual(sink.emit(2, [ok(1), ok(2), ok(3)])[0], ZCTL_SINK_PENDING)
        wait_for(lambda: sink.completed(2), what="batch 2's completion")
        # One message larger than message.max.bytes fails synchronously, one renders a topic
        # that is not a valid name: each batch is rejected, once; its other messages go out.
        big = {"remoteAddr": "a1", "n": 100, "pad": "x" * 4000}
        bad_topic = {"remoteAddr": "10.0.0.1:5", "n": 101}
        self.assertEqual(sink.emit(3, [ok(4), big, ok(5)])[0], ZCTL_SINK_PENDING)
        self.assertEqual(sink.emit(4, [bad_topic, ok(6)])[0], ZCTL_SINK_PENDING)
        wait_for(lambda: sink.completed(3) and sink.completed(4), what="batches 3 and 4")
        # A broker that does not answer: pending until destroy, which completes it with RETRY.
        mock.command("down -1")
        self.assertEqual(sink.emit(5, [ok(7)])[0], ZCTL_SINK_PENDING)
        status = StatusT(ctypes.sizeof(StatusT), 0, ctypes.cast(ctypes.create_string_buffer(512), ctypes.c_char_p), 512, 0)
        self.assertEqual(sink.plugin.flush(sink.instance, 100, ctypes.byref(status)), ZCTL_SINK_RETRY)
        self.assertEqual(sink.completed(5), [])
        sink.destroy()
        c = sink.completions
        self.assertEqual(sorted(b for b, _, _ in c), [2, 3, 4, 5], "one completion per pending batch")
        results = {b: (r, reason) for b, r, reason in c}
        self.assertEqual(results[2], (ZCTL_SINK_OK, ""))
        self.assertEqual(results[3][0], ZCTL_SINK_REJECT)
        self.assertIn("1 of 3 message(s) not delivered", results[3][1])
        self.assertIn("Broker: Message size too large", results[3][1])
        self.assertEqual(results[4][0], ZCTL_SINK_REJECT)
        self.assertIn("abi.10.0.0.1:5: not a valid Kafka topic name", results[4][1])
        self.assertEqual(results[5][0], ZCTL_SINK_RETRY)
        self.assertIn("not acknowledged before the sink shut down (_PURGE_", results[5][1])
        mock.command("up -1")
        got = {json.loads(m["payload"])["n"] for m in mock.consume(["abi.a1"])}
        self.assertEqual(got - {7}, {1, 2, 3, 4, 5, 6}, "every good message, never the one too large")

    def test_health_reports_an_unreachable_broker(self):
        mock = self.mock()
        sink = self.instance({"brokers": mock.bootstrap, "librdkafka": {"reconnect.backoff.max.ms": 100}})
        status_buf = ctypes.create_string_buffer(512)
        status = StatusT(ctypes.sizeof(StatusT), 0, ctypes.cast(status_buf, ctypes.c_char_p), 512, 0)
        self.assertEqual(sink.plugin.health(sink.instance, ctypes.byref(status)), ZCTL_SINK_OK)
        mock.command("down -1")
        self.assertEqual(sink.plugin.health(sink.instance, ctypes.byref(status)), ZCTL_SINK_RETRY)
        self.assertIn("no Kafka broker answered within 2000ms", status_buf.value.decode())
        mock.command("up -1")
        wait_for(lambda: sink.plugin.health(sink.instance, ctypes.byref(status)) == ZCTL_SINK_OK, timeout=10,
                 what="health after the broker is back")

    # --- configuration ----------------------------------------------------------

    def test_invalid_configs_are_refused_at_start_with_precise_messages(self):
        b = "127.0.0.1:9092"
        cases = [
            ({}, "'brokers' is required"),
            ({"brokers": ""}, "'brokers' must be a non-empty list of HOST:PORT strings"),
            ({"brokers": []}, "'brokers' must be a non-empty list of HOST:PORT strings"),
            ({"brokers": ["a:1", "b c:2"]}, "'brokers' must be a non-empty list"),
            ({"brokers": b, "topik": "x"}, "unknown key 'topik' (did you mean 'topic'?)"),
            ({"brokers": b, "topic": "zctl.{namspace}"}, "'topic': unknown placeholder '{namspace}' (did you mean '{namespace}'?)"),
            ({"brokers": b, "key": "{event_src_id"}, "'key': unmatched '{' at position 1"),
            ({"brokers": b, "topic": "zctl/{namespace}"}, "'topic': \"zctl/{namespace}\" is not a valid Kafka topic name"),
            ({"brokers": b, "acks": "2"}, "'acks' must be \"all\" (every in-sync replica), 1 (the leader) or 0 (none)"),
            ({"brokers": b, "compression": "brotli"}, "'compression' must be \"none\", \"gzip\""),
            ({"brokers": b, "message_timeout": "5"}, "'message_timeout' must be a duration from 1ms to 10m"),
            ({"brokers": b, "librdkafka": {"no.such.property": "1"}},
             "'librdkafka': no.such.property: \"1\": No such configuration property: \"no.such.property\""),
            ({"brokers": b, "librdkafka": {"linger.ms": "soon"}},
             "'librdkafka': linger.ms: \"soon\": Invalid value for configuration property \"queue.buffering.max.ms\""),
            ({"brokers": b, "librdkafka": {"bootstrap.servers": "x:1"}},
             "'librdkafka': bootstrap.servers is set by the sink; use 'brokers'"),
            ({"brokers": b, "librdkafka": {"queue.buffering.max.messages": [1]}},
             "'librdkafka': the value of queue.buffering.max.messages must be a string, number or boolean"),
        ]
        self.assert_sink_config_refused("kafka", "k", cases)

    def test_a_property_combination_only_librdkafka_refuses_stops_the_start(self):
        """Some combinations only librdkafka's client creation checks; the node refuses them too."""
        node = self.node("bad", config="sinks:\n  - name: k\n    plugin: kafka\n    config: " + json.dumps(
            {"brokers": "127.0.0.1:9092", "acks": 1, "librdkafka": {"enable.idempotence": True}}) + "\n")
        code, _, err = node.run_to_exit()
        self.assertEqual(code, 1, err)
        self.assertIn("sink 'k' (plugin kafka): cannot create the Kafka producer: "
                      "`acks` must be set to `all` when `enable.idempotence` is true", err)

    def test_example_config_is_valid(self):
        self.assert_example_config_valid("examples/sinks/kafka.yaml")


if __name__ == "__main__":
    main()
