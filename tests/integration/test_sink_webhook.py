#!/usr/bin/env python3
"""The webhook sink against a real HTTP(S) server: a `http.server` receiver in
this process records every request and answers what each test scripts (200,
500, 429 with Retry-After, 400, or no answer at all). A real `zctl serve`
emits the events: node/started, one connection/protocol_error per garbage
connection to its mesh port, node/stopping. A file sink on the same node is
the reference for which events the webhook must have received."""

import hashlib
import hmac
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import START_EVENTS, NodeTestCase, free_port, main, metric, read_events, wait_for


class Receiver:
    """An HTTP/1.1 server with keep-alive on 127.0.0.1. `script` queues what
    the next requests get; once the queue is empty every request gets 200."""

    def __init__(self, tls=None, idle_timeout=None, port=0):
        self.requests = []
        self.actions = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = idle_timeout  # closes a kept-alive connection idle for this long

            def log_message(self, *args):
                pass

            def do_POST(self):
                arrived = time.monotonic()  # before the body: reading it may wait for this thread's turn
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    action = receiver.actions.pop(0) if receiver.actions else ("status", 200, {}, b"")
                    peer_cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
                    receiver.requests.append({
                        "time": arrived, "path": self.path, "headers": dict(self.headers), "body": body,
                        "answer": action[1] if action[0] == "status" else "hang", "client_port": self.client_address[1],
                        "peer_cert": peer_cert,
                    })
                if action[0] == "hang":
                    time.sleep(action[1])
                    self.close_connection = True
                    return
                _, status, headers, reply = action
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                # E.g. a client that refused our certificate; kept for assertions, not printed.
                with receiver.lock:
                    receiver.errors.append(repr(sys.exc_info()[1]))

        self.errors = []
        self.server = Server(("127.0.0.1", port), Handler)
        if tls is not None:
            # The handshake happens in the handler's thread, so a failing client cannot stall accept().
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.scheme = "https" if tls is not None else "http"

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/hook?source=zctl"

    def script(self, *actions):
        with self.lock:
            self.actions.extend(actions)

    def answered(self, status=200):
        with self.lock:
            return [r for r in self.requests if r["answer"] == status]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def status(code, headers=None, body=b""):
    return ("status", code, headers or {}, body)


def parse_body(request):
    if request["headers"].get("Content-Type") == "application/x-ndjson":
        text = request["body"].decode()
        assert text.endswith("\n"), text
        return [json.loads(line) for line in text.splitlines()]
    events = json.loads(request["body"])
    assert isinstance(events, list), request["body"]
    return events


def seqs(events):
    return [e["seq"] for e in events]


class WebhookTest(NodeTestCase):
    def setUp(self):
        super().setUp()
        self.receivers = []

    def tearDown(self):
        super().tearDown()  # stops the nodes first, so nothing is mid-request
        for r in self.receivers:
            r.stop()

    def receiver(self, tls=None, idle_timeout=None, port=0):
        r = Receiver(tls, idle_timeout, port)
        self.receivers.append(r)
        return r

    def write(self, name, text):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_node(self, config, retry="{ initial: 20ms, max: 100ms }", node_id="n1", sink_keys=""):
        self.reference = os.path.join(self.workdir, f"{node_id}-reference.jsonl")
        text = f"""sinks:
  - name: hook
    plugin: webhook
    retry: {retry}
    config: {json.dumps(config)}{sink_keys}
  - name: reference
    plugin: file
    config: {{ path: {self.reference} }}
"""
        return self.node(node_id, config=text).start()

    def assert_no_event_missing(self, receiver):
        """Every event the reference file sink got, the webhook got in a 2xx-answered request."""
        delivered = [e for r in receiver.answered(200) for e in parse_body(r)]
        reference = read_events(self.reference)
        self.assertEqual(sorted(set(seqs(delivered))), seqs(reference))
        by_seq = {e["seq"]: e for e in delivered}
        for e in reference:
            self.assertEqual(by_seq[e["seq"]], e)  # the same bytes, not a re-serialisation
        return delivered

    # --- delivery -------------------------------------------------------------

    def test_batches_arrive_as_json_arrays_with_headers_token_and_a_valid_signature(self):
        r = self.receiver()
        token = self.write("token", "tok-123\n")
        secret = self.write("secret", "hmac-key-456\n")
        node = self.start_node({"url": r.url, "headers": {"X-Foo": "bar", "X-Tenant": "42"},
                                "bearer_token_file": token, "hmac_secret_file": secret})
        wait_for(lambda: r.answered(200), what="the started event")
        self.poke(node, 5)
        wait_for(lambda: len(read_events(self.reference)) >= 6, what="six events")
        self.assertEqual(node.stop(), 0)

        requests = r.answered(200)
        self.assertEqual(len(requests), len(r.requests))
        self.assertGreaterEqual(len(requests), 2)
        delivered = self.assert_no_event_missing(r)
        self.assertEqual(len(delivered), len(set(seqs(delivered))), "nothing was sent twice")
        types = [(e["namespace"], e["eventType"]) for e in delivered]
        self.assertEqual(types[0], ("node", "started"))
        self.assertEqual(types.count(("connection", "protocol_error")), 5)
        self.assertEqual(types[-1], ("node", "stopping"))
        for req in requests:
            h = req["headers"]
            self.assertEqual(req["path"], "/hook?source=zctl")
            self.assertEqual(h["Content-Type"], "application/json")
            self.assertEqual(h["X-Foo"], "bar")
            self.assertEqual(h["X-Tenant"], "42")
            self.assertEqual(h["Authorization"], "Bearer tok-123")
            self.assertTrue(h["User-Agent"].startswith("zctl-webhook/"))
            m = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", h["X-Zctl-Signature"])
            self.assertIsNotNone(m, h["X-Zctl-Signature"])
            self.assertLess(abs(int(m.group(1)) - time.time()), 60)
            expected = hmac.new(b"hmac-key-456", m.group(1).encode() + b"." + req["body"], hashlib.sha256).hexdigest()
            self.assertTrue(hmac.compare_digest(expected, m.group(2)), "signature verifies with the secret")
        # One kept-alive connection carried every request.
        self.assertEqual(len({req["client_port"] for req in requests}), 1)

    def test_a_kept_alive_connection_closed_by_the_server_is_replaced_without_a_retry(self):
        r = self.receiver(idle_timeout=0.2)
        node = self.start_node({"url": r.url})
        # Start-up emits node/started and, once the leader is announced, the cluster
        # events, in as many batches as timing makes. The requests this test makes
        # are told apart by what they carry, not by counting.
        wait_for(lambda: node.get("/readyz")[0] == 200, what="the leader announcement")
        poked = []
        for n in range(1, 3):
            wait_for(lambda: self.all_delivered(r), what="every event so far")
            time.sleep(0.5)  # the server drops the idle connection meanwhile
            self.poke(node, 1)
            wait_for(lambda: len(self.poked_requests(r)) >= n, what=f"request {n} after an idle drop")
            poked = self.poked_requests(r)
        m = self.metrics(node)
        self.assertEqual(metric(m, "controller_sink_events_total", sink="hook", result="retried"), 0)
        self.assertEqual(len(poked), 2, "no request was sent twice")
        self.assertEqual([sum(e["eventType"] == "protocol_error" for e in parse_body(req)) for req in poked], [1, 1])
        ports = [req["client_port"] for req in r.requests]
        first = ports.index(poked[0]["client_port"])
        self.assertNotIn(poked[0]["client_port"], ports[:first], "the first request after an idle drop used a new connection")
        self.assertNotEqual(poked[0]["client_port"], poked[1]["client_port"], "so did the second")
        self.assertEqual(node.stop(), 0)
        self.assert_no_event_missing(r)

    def all_delivered(self, receiver):
        delivered = {e["seq"] for req in receiver.answered(200) for e in parse_body(req)}
        return delivered == set(seqs(read_events(self.reference)))

    @staticmethod
    def poked_requests(receiver):
        with receiver.lock:
            requests = list(receiver.requests)
        return [req for req in requests if any(e["eventType"] == "protocol_error" for e in parse_body(req))]

    # --- spool ----------------------------------------------------------------

    def test_a_spool_keeps_events_through_kill_9_and_delivers_all_in_order_when_the_receiver_comes_up(self):
        port = free_port()  # nothing listens there yet: every attempt is refused
        spool = os.path.join(self.workdir, "spool")
        sink_keys = f"\n    spool: {{ dir: {spool}, max_bytes: 10MiB }}"
        node = self.start_node({"url": f"http://127.0.0.1:{port}/hook"}, sink_keys=sink_keys)
        self.poke(node, 20)

        def all_spooled():
            reference = read_events(self.reference)
            # Everything this run will emit: the start-up events, the pokes and
            # the hook's sink/unhealthy (a kill before the spool has an event
            # loses it, so the test waits for the last one).
            return (len(reference) >= len(START_EVENTS) + 20 and "unhealthy" in [e["eventType"] for e in reference] and
                    metric(self.metrics(node), "controller_sink_spool_events", sink="hook") == len(reference))

        wait_for(all_spooled, what="every event in the spool")
        self.assertGreater(metric(self.metrics(node), "controller_sink_spool_bytes", sink="hook"), 0)
        node.kill()  # SIGKILL: no drain, no flush
        node.start()  # the same data and spool directories
        self.assertIn("from an earlier run in spool", node.stderr())
        self.poke(node, 5)
        r = self.receiver(port=port)
        wait_for(lambda: self.all_delivered(r), timeout=20, what="every spooled and new event")
        self.assertEqual(node.stop(), 0)
        delivered = self.assert_no_event_missing(r)  # both runs, once or more, the same bytes
        first_seen = list(dict.fromkeys(seqs(delivered)))
        self.assertEqual(first_seen, sorted(first_seen), "delivered in order")

    def test_500_is_retried_until_delivered_and_ndjson_is_one_event_per_line(self):
        r = self.receiver()
        r.script(status(500, body=b"database down"), status(503))
        node = self.start_node({"url": r.url, "format": "ndjson"})
        wait_for(lambda: r.answered(200), what="a delivery after two failures")
        self.assertEqual([req["answer"] for req in r.requests[:3]], [500, 503, 200])
        self.assertEqual(r.requests[0]["body"], r.requests[2]["body"], "the same batch is resent")
        self.assertEqual(r.requests[2]["headers"]["Content-Type"], "application/x-ndjson")
        m = self.metrics(node)
        self.assertGreaterEqual(metric(m, "controller_sink_events_total", sink="hook", result="retried"), 2)
        self.assertEqual(metric(m, "controller_sink_events_total", sink="hook", result="failed"), 0)
        self.poke(node, 2)
        self.assertEqual(node.stop(), 0)
        self.assert_no_event_missing(r)
        self.assertIn("answered 500 Internal Server Error: database down", node.stderr())

    def test_429_retry_after_is_honoured(self):
        r = self.receiver()
        r.script(status(429, {"Retry-After": "1"}, b"slow down"))
        # The host's own backoff would retry after ~10 ms; Retry-After must win.
        node = self.start_node({"url": r.url}, retry="{ initial: 10ms, max: 10ms }")
        wait_for(lambda: r.answered(200), timeout=10, what="the retry after Retry-After")
        gap = r.requests[1]["time"] - r.requests[0]["time"]
        self.assertGreaterEqual(gap, 0.95)
        self.assertLess(gap, 3.0)
        self.assertEqual(r.requests[0]["body"], r.requests[1]["body"])
        self.assertEqual(node.stop(), 0)
        self.assertIn("answered 429 Too Many Requests: slow down (Retry-After: 1s)", node.stderr())
        self.assert_no_event_missing(r)

    def test_400_is_rejected_once_and_the_node_keeps_serving_and_delivering(self):
        r = self.receiver()
        r.script(status(400, {"Content-Type": "text/plain"}, b"bad payload:\n field 'x' missing"))
        dead_letters = os.path.join(self.workdir, "dead.jsonl")
        node = self.start_node({"url": r.url}, sink_keys=f"\n    dead_letter: {{ path: {dead_letters} }}")
        wait_for(lambda: r.answered(400), what="the rejected request")
        rejected = parse_body(r.answered(400)[0])
        # The first batch: started, and the leader announcement if it was already queued.
        types = [e["eventType"] for e in rejected]
        self.assertEqual(types, START_EVENTS[:len(types)])
        wait_for(lambda: "sink/dropped" in {f'{e["namespace"]}/{e["eventType"]}' for e in read_events(self.reference)},
                 what="the sink/dropped announcement")
        dropped = [e for e in read_events(self.reference) if e["eventType"] == "dropped"][0]
        self.assertEqual((dropped["sink"], dropped["reason"], dropped["count"]), ("hook", "rejected", len(rejected)))
        self.poke(node, 3)
        wait_for(lambda: len([e for req in r.answered(200) for e in parse_body(req)]) >= 4,
                 what="later events to be delivered")
        m = self.metrics(node)
        self.assertEqual(metric(m, "controller_sink_events_total", sink="hook", result="failed"), len(rejected))
        self.assertEqual(metric(m, "controller_sink_events_total", sink="hook", result="retried"), 0)
        self.assertEqual(node.get("/healthz")[0], 200)
        self.assertEqual(node.stop(), 0)
        # Sent once, never retried.
        started = [req for req in r.requests if 1 in seqs(parse_body(req))]
        self.assertEqual(len(started), 1)
        self.assertIn("answered 400 Bad Request: bad payload: field 'x' missing", node.stderr())
        # The rejected events, whole and with the reason, in the dead-letter file; nothing else.
        lines = read_events(dead_letters)
        self.assertEqual(len(lines), len(rejected))
        for line in lines:
            self.assertEqual((line["sink"], line["result"], line["attempts"]), ("hook", "rejected", 1))
            self.assertIn("400 Bad Request", line["reason"])
        self.assertEqual([line["event"] for line in lines], read_events(self.reference)[:len(rejected)])
        delivered = seqs(e for req in r.answered(200) for e in parse_body(req))
        self.assertEqual(sorted(delivered), [e["seq"] for e in read_events(self.reference)][len(rejected):])

    def test_a_server_that_does_not_answer_times_out_and_the_batch_is_retried(self):
        r = self.receiver()
        r.script(("hang", 2.0))
        node = self.start_node({"url": r.url, "timeout": "300ms"})
        wait_for(lambda: r.answered(200), what="the retry after the timeout")
        gap = r.requests[1]["time"] - r.requests[0]["time"]
        # The plugin's 300 ms run from its send; the server may see a request late
        # on a loaded machine, so the gap it measures can be somewhat shorter.
        self.assertGreaterEqual(gap, 0.2)
        self.assertLess(gap, 1.5, "retried after the timeout, not after the server gave up")
        self.assertEqual(r.requests[0]["body"], r.requests[1]["body"])
        self.assertGreaterEqual(metric(self.metrics(node), "controller_sink_events_total", sink="hook", result="retried"), 1)
        self.assertEqual(node.stop(), 0)
        self.assertIn("timed out after 300ms waiting for the response", node.stderr())
        self.assert_no_event_missing(r)

    def test_connection_refused_is_retried(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again: nothing listens there
        node = self.start_node({"url": f"http://127.0.0.1:{port}/", "timeout": "1s"})
        wait_for(lambda: (metric(self.metrics(node), "controller_sink_events_total", sink="hook", result="retried") or 0) >= 2,
                 what="retries")
        self.assertEqual(node.get("/healthz")[0], 200)
        node.stop()
        self.assertIn(f"POST http://127.0.0.1:{port}/: connecting to 127.0.0.1:{port}: Connection refused", node.stderr())

    # --- TLS --------------------------------------------------------------------

    def make_ca(self, name):
        self.openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}",
                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return os.path.join(self.workdir, f"{name}.pem")

    def make_cert(self, ca, name, ext):
        self.write(f"{name}.ext", ext + "\n")
        self.openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        self.openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                     "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")
        return os.path.join(self.workdir, f"{name}.pem"), os.path.join(self.workdir, f"{name}.key")

    def test_https_with_a_ca_and_a_client_certificate_and_a_wrong_ca_fails(self):
        server_ca = self.make_ca("server-ca")
        client_ca = self.make_ca("client-ca")
        other_ca = self.make_ca("other-ca")
        server_cert, server_key = self.make_cert("server-ca", "server", "subjectAltName=IP:127.0.0.1")
        client_cert, client_key = self.make_cert("client-ca", "zctl-client", "extendedKeyUsage=clientAuth")
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(server_cert, server_key)
        tls.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the sink must present its certificate
        tls.load_verify_locations(client_ca)
        r = self.receiver(tls)
        client = {"cert_file": client_cert, "key_file": client_key}

        node = self.start_node({"url": r.url, "ca_file": server_ca, **client})
        wait_for(lambda: r.answered(200), what="delivery over TLS")
        self.assertEqual(node.stop(), 0)
        self.assert_no_event_missing(r)
        subject = dict(x[0] for x in r.requests[0]["peer_cert"]["subject"])
        self.assertEqual(subject["commonName"], "zctl-client")

        # A CA that did not sign the server's certificate: nothing is delivered.
        before = len(r.requests)
        node = self.start_node({"url": r.url, "ca_file": other_ca, **client}, node_id="n2")
        wait_for(lambda: (metric(self.metrics(node), "controller_sink_events_total", sink="hook", result="retried") or 0) >= 2,
                 what="retries with the wrong CA")
        self.assertEqual(metric(self.metrics(node), "controller_sink_events_total", sink="hook", result="delivered"), 0)
        node.kill()
        self.assertEqual(len(r.requests), before)
        self.assertIn("TLS handshake with 127.0.0.1:", node.stderr())
        self.assertIn("certificate verify failed", node.stderr())
        self.assertTrue(any("UNKNOWN_CA" in e for e in r.errors), r.errors)  # the server saw the refusal

        # verify: false accepts it (and so would accept anyone's).
        node = self.start_node({"url": r.url, "ca_file": other_ca, "verify": False, **client}, node_id="n3")
        wait_for(lambda: len(r.answered(200)) > before, what="delivery without verification")
        node.kill()

    # --- configuration ----------------------------------------------------------

    def test_invalid_configs_are_refused_at_start_with_precise_messages(self):
        token = self.write("token", "t\n")
        cases = [
            ({"url": "ftp://example.com/"}, "'url' must start with http:// or https://"),
            ({"url": "http://example.com:99999/"}, "'url' has an invalid port (1-65535)"),
            ({}, "'url' is required"),
            ({"url": "http://x/", "timout": "1s"}, "unknown key 'timout' (did you mean 'timeout'?)"),
            ({"url": "http://x/", "timeout": "10"}, "'timeout' must be a duration from 1ms to 10m"),
            ({"url": "http://x/", "format": "xml"}, "'format' must be \"json\""),
            ({"url": "http://x/", "bearer_token_file": "/nonexistent/token"},
             "'bearer_token_file': cannot read /nonexistent/token: No such file or directory"),
            ({"url": "http://x/", "ca_file": token}, "'ca_file' only applies to an https:// url"),
            ({"url": "https://x/", "cert_file": token}, "'cert_file' and 'key_file' must be given together"),
            ({"url": "http://x/", "headers": {"Content-Length": "1"}}, "Content-Length is set by the sink"),
            ({"url": "http://x/", "headers": {"X-A": "a\r\nX-B: b"}}, "must not contain CR, LF or NUL"),
        ]
        self.assert_sink_config_refused("webhook", "hook", cases)

    def test_example_config_is_valid(self):
        self.assert_example_config_valid("examples/sinks/webhook.yaml")


if __name__ == "__main__":
    main()
