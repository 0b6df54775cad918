#!/usr/bin/env python3
"""The mesh port through real sockets: the join handshake, stray connections
under every action, protocol errors with their replies, refusals, limits,
flood detection, joined sessions and TLS with certificates made by openssl.

Frames are built here from man/zctl-protocol.7, independently of the C++
encoder, so the tests check the documented wire format."""

import datetime
import json
import os
import re
import selectors
import signal
import socket
import ssl
import struct
import subprocess
import time

from harness import NodeTestCase, main, metric, wait_for

GRACE_MS = 600
TOLERANCE = 0.4  # seconds a close may come after the deadline on a loaded 2-core machine
RFC3339_NANO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}[+-]\d{2}:\d{2}$")

HELLO, HELLO_ACK, JOIN, ACCEPTED, REJECTED, VERSIONS, HEARTBEAT, HEARTBEAT_ACK = range(1, 9)


def frame(msg_type, body, version=1, flags=0, magic=b"ZCTL"):
    return magic + bytes([version, msg_type]) + struct.pack(">HI", flags, len(body)) + body


def s(text):
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(data)) + data


def hello(node_id="p1", cluster="zctl", lo=1, hi=1):
    return frame(HELLO, bytes([lo, hi]) + s(node_id) + s(cluster))


def join(token="", raft="127.0.0.1:7001"):
    return frame(JOIN, s(raft) + s(token))


def read_frames(sock, timeout=3.0):
    """Reads until EOF (or timeout) and returns (frames, closed, seconds until EOF)."""
    sock.settimeout(timeout)
    data = b""
    closed = False
    start = time.monotonic()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            data += chunk
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    return parse_frames(data), closed, time.monotonic() - start


def read_one_frame(sock, timeout=3.0):
    sock.settimeout(timeout)
    header = recv_exact(sock, 12)
    length = struct.unpack(">I", header[8:12])[0]
    return parse_frames(header + recv_exact(sock, length))[0]


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def parse_frames(data):
    frames = []
    while len(data) >= 12:
        assert data[:4] == b"ZCTL", data
        length = struct.unpack(">I", data[8:12])[0]
        frames.append((data[5], data[12:12 + length]))
        data = data[12 + length:]
    return frames


def parse_str(body, offset):
    n = struct.unpack(">H", body[offset:offset + 2])[0]
    return body[offset + 2:offset + 2 + n].decode(), offset + 2 + n


def rejected_reason(body):
    reason, offset = parse_str(body, 0)
    detail, _ = parse_str(body, offset)
    return reason, detail


class MeshTestCase(NodeTestCase):
    token = "join-s3cret"

    def start_node(self, mesh_extra="", cluster_extra="", node_id="n1", stray_action="disconnect", grace_ms=GRACE_MS):
        token_file = os.path.join(self.workdir, "token")
        with open(token_file, "w") as f:
            f.write(self.token + "\n")
        config = f"""
mesh:
  join_token_file: {token_file}
  stray: {{ grace_period: {grace_ms}ms, action: {stray_action}, log_level: warn }}
{mesh_extra}
cluster:
  id: zctl
  election_timeout: 1s
  heartbeat: 100ms
{cluster_extra}
"""
        node = self.node(node_id, config=config).start()
        self.assertIsNotNone(node.mesh_address, node.stdout())
        return node

    def connect(self, node):
        sock = socket.create_connection(node.mesh_address, timeout=5)
        self.addCleanup(sock.close)
        return sock

    def events_of(self, node, event_type, count=1, timeout=10, reason=None):
        """Waits until `count` connection/<event_type> events (with `reason`, if given) are on disk."""
        def found():
            got = [e for e in node.events() if e["namespace"] == "connection" and e["eventType"] == event_type
                   and (reason is None or e.get("reason") == reason)]
            return got if len(got) >= count else None

        return wait_for(found, timeout=timeout, what=f"{count} connection/{event_type} event(s)")

    def metrics(self, node):
        status, _, body = node.get("/metrics")
        self.assertEqual(status, 200)
        return body

    def assert_good_join(self, node, node_id="good1"):
        """After whatever a test did, a well-behaved peer still joins."""
        sock = self.connect(node)
        sock.sendall(hello(node_id) + join(self.token))
        t, body = read_one_frame(sock)
        self.assertEqual(t, HELLO_ACK)
        t, body = read_one_frame(sock)
        self.assertEqual(t, ACCEPTED, body)
        leader, _ = parse_str(body, 0)
        self.assertEqual(leader, node.node_id)
        sock.close()


class StrayTest(MeshTestCase):
    def test_idle_connection_is_a_stray_with_every_field_and_is_closed_at_the_deadline(self):
        node = self.start_node()
        # From before the connect: this process may be descheduled between
        # the connect and the read, and that time counts on the node's side.
        started = time.monotonic()
        sock = self.connect(node)
        local_port = sock.getsockname()[1]
        frames, closed, _ = read_frames(sock, timeout=5)
        took = time.monotonic() - started
        self.assertTrue(closed)
        self.assertEqual(frames, [], "a stray is closed without a frame")
        self.assertGreaterEqual(took, GRACE_MS / 1000, "never before the grace period")
        self.assertLess(took, GRACE_MS / 1000 + TOLERANCE)
        (event,) = self.events_of(node, "stray")
        self.assertEqual(event["remoteAddr"], f"127.0.0.1:{local_port}")
        self.assertEqual(event["localAddr"], f"{node.mesh_address[0]}:{node.mesh_address[1]}")
        self.assertRegex(event["connectedAt"], RFC3339_NANO)
        self.assertEqual(event["pendingStep"], "hello")
        self.assertIsNone(event["protocolVersion"])
        self.assertNotIn("nodeId", event)
        self.assertEqual(event["graceMs"], GRACE_MS)
        self.assertEqual(event["action"], "disconnect")
        self.assertEqual(event["bytesIn"], 0)
        self.assertRegex(node.stderr(), r"warning mesh: stray connection from 127\.0\.0\.1:%d" % local_port)
        m = self.metrics(node)
        self.assertEqual(metric(m, "controller_stray_connections_total", action="disconnect", step="hello"), 1)
        self.assertEqual(metric(m, "controller_connection_duration_seconds_count", outcome="abnormal"), 1)
        self.assertEqual(metric(m, "controller_mesh_connections", state="pending"), 0)
        self.assert_good_join(node)

    def test_hello_without_join_is_a_stray_at_join_with_version_and_node_id(self):
        node = self.start_node()
        sock = self.connect(node)
        sock.sendall(hello("lazy1"))
        frames, closed, _ = read_frames(sock, timeout=5)
        self.assertTrue(closed)
        self.assertEqual([t for t, _ in frames], [HELLO_ACK])
        (event,) = self.events_of(node, "stray")
        self.assertEqual((event["pendingStep"], event["protocolVersion"], event["nodeId"], event["bytesIn"]),
                         ("join", 1, "lazy1", len(hello("lazy1"))))
        self.assertEqual(
            metric(self.metrics(node), "controller_stray_connections_total", action="disconnect", step="join"), 1)

    def test_half_a_frame_and_a_dribbling_sender_are_bound_by_the_same_deadline(self):
        node = self.start_node()
        partial = self.connect(node)
        partial.sendall(hello()[:9])  # magic and version arrived, the rest never does
        dribbler = self.connect(node)
        data = hello("drib1")
        start = time.monotonic()
        sent = 0
        for i in range(len(data) - 1):  # one byte every 50 ms: always active, never done
            if time.monotonic() - start > GRACE_MS / 1000 + TOLERANCE:
                break
            try:
                dribbler.sendall(data[i:i + 1])
            except OSError:
                break
            sent += 1
            time.sleep(0.05)
        for sock in (partial, dribbler):
            _, closed, _ = read_frames(sock, timeout=3)
            self.assertTrue(closed)
        # Told apart by their ports: on a loaded machine the dribbler may get
        # fewer than 9 bytes in before the deadline.
        by_port = {int(e["remoteAddr"].rsplit(":", 1)[1]): e for e in self.events_of(node, "stray", count=2)}
        half = by_port[partial.getsockname()[1]]
        self.assertEqual((half["pendingStep"], half["bytesIn"], half["protocolVersion"]), ("hello", 9, 1))
        dribbled = by_port[dribbler.getsockname()[1]]
        self.assertEqual(dribbled["pendingStep"], "hello")
        # It got more than a byte in, was still mid-hello, and was cut at the same deadline.
        self.assertGreater(dribbled["bytesIn"], 1)
        self.assertLessEqual(dribbled["bytesIn"], sent)
        self.assertLess(sent, len(data) - 1, "the dribbler finished its hello before the deadline")
        self.assert_good_join(node)

    def test_a_stopped_node_counts_the_grace_period_from_its_return_never_from_before_the_connect(self):
        # The node dates a connection by the first look at its accept queue
        # that found it there (zctl-protocol(7)). A stopped node cannot look,
        # so a peer that connected meanwhile gets its grace period from the
        # node's return. (Reading the kernel's own handshake age instead
        # closed connections before their grace period on a VM short of
        # CPU: that age is counted in jiffies, which can jump.)
        grace_ms, stalled = 1500, 1.0
        node = self.start_node(grace_ms=grace_ms)
        node.signal(signal.SIGSTOP)
        try:
            # kill() returns before every thread has stopped.
            wait_for(node.stopped, what="the node to stop")
            sock = self.connect(node)  # completes in the kernel while the node is stopped
            sock.settimeout(None)
            time.sleep(stalled)
        finally:
            resumed_wall, resumed = time.time(), time.monotonic()
            node.signal(signal.SIGCONT)
        frames, closed, _ = read_frames(sock, timeout=5)
        took = time.monotonic() - resumed
        self.assertTrue(closed)
        self.assertEqual(frames, [])
        self.assertGreaterEqual(took, grace_ms / 1000 - 0.05, "counted from the node's return")
        self.assertLess(took, grace_ms / 1000 + TOLERANCE)
        (event,) = self.events_of(node, "stray")
        connected_at = datetime.datetime.fromisoformat(event["connectedAt"][:26] + event["connectedAt"][29:])
        self.assertLess(abs(connected_at.timestamp() - resumed_wall), 0.3, event["connectedAt"])
        self.assert_good_join(node)

    def test_a_burst_of_connections_is_never_closed_before_its_grace_period(self):
        # 300 connects back to back: the node takes them in turns of accepts,
        # finding one or several queued per look; each one's clock starts at
        # the look that found it, which is never before its connect() here.
        count, grace_ms = 300, 1000
        node = self.start_node(grace_ms=grace_ms, mesh_extra="  max_pending_per_source: 1000")
        started, socks = {}, []
        for _ in range(count):
            sock = socket.socket()
            self.addCleanup(sock.close)
            started_at = (time.monotonic(), time.time())
            sock.connect(node.mesh_address)
            started[sock.getsockname()[1]] = started_at
            socks.append(sock)
        sel = selectors.DefaultSelector()
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        closed_after = {}
        deadline = time.monotonic() + grace_ms / 1000 + 5
        while len(closed_after) < count and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                now = time.monotonic()
                port = key.fileobj.getsockname()[1]
                self.assertEqual(key.fileobj.recv(64), b"", "an idle peer gets no frame")
                closed_after[port] = now - started[port][0]
                sel.unregister(key.fileobj)
        self.assertEqual(len(closed_after), count, "every connection closed by the node")
        early = sorted(t for t in closed_after.values() if t < grace_ms / 1000)
        self.assertEqual(early, [], "closed sooner than the grace period after connect()")
        events = self.events_of(node, "stray", count=count)
        for event in events:
            port = int(event["remoteAddr"].rsplit(":", 1)[1])
            connected_at = datetime.datetime.fromisoformat(event["connectedAt"][:26] + event["connectedAt"][29:])
            # connectedAt is cut to microseconds here, and the node derives it
            # from its steady clock: a millisecond of slack.
            self.assertGreaterEqual(connected_at.timestamp(), started[port][1] - 0.001, event)
        self.assert_good_join(node)

    def test_a_peer_gone_before_its_first_byte_is_an_abnormal_close_and_no_stray(self):
        # Idle connections wait outside the node's main reactor until their
        # first readiness; an EOF is such a readiness too.
        node = self.start_node()
        sock = self.connect(node)
        wait_for(lambda: metric(self.metrics(node), "controller_mesh_connections", state="pending") == 1,
                 what="the connection pending")
        sock.close()
        wait_for(lambda: metric(self.metrics(node), "controller_connection_duration_seconds_count",
                                outcome="abnormal") == 1, what="the close counted")
        self.assertEqual(metric(self.metrics(node), "controller_mesh_connections", state="pending"), 0)
        time.sleep(GRACE_MS / 1000 + TOLERANCE)
        self.assertEqual([e for e in node.events() if e["eventType"] == "stray"], [])
        self.assert_good_join(node)

    def test_stopping_the_node_closes_idle_connections_and_exits_0(self):
        node = self.start_node(stray_action="none")
        socks = [self.connect(node) for _ in range(3)]
        wait_for(lambda: metric(self.metrics(node), "controller_mesh_connections", state="pending") == 3,
                 what="three connections pending")
        self.assertEqual(node.stop(), 0, node.stderr())
        for sock in socks:
            _, closed, _ = read_frames(sock, timeout=3)
            self.assertTrue(closed)

    def test_action_log_and_none_keep_the_connection_and_emit_once(self):
        for action in ("log", "none"):
            with self.subTest(action=action):
                node = self.start_node(stray_action=action, node_id=f"keep-{action}")
                sock = self.connect(node)
                (event,) = self.events_of(node, "stray")
                self.assertEqual(event["action"], action)
                time.sleep(2 * GRACE_MS / 1000)  # two more grace periods: no second event, still open
                self.assertEqual(len(self.events_of(node, "stray")), 1)
                sock.settimeout(0.2)
                with self.assertRaises(socket.timeout):
                    sock.recv(1)  # still open: nothing to read, no EOF
                m = self.metrics(node)
                self.assertEqual(metric(m, "controller_stray_connections_total", action=action, step="hello"), 1)
                self.assertEqual(metric(m, "controller_mesh_connections", state="pending"), 1)
                logged = "stray connection from" in node.stderr()
                self.assertEqual(logged, action == "log")
                # A kept stray may still finish its join.
                sock.sendall(hello(f"late-{action}") + join(self.token))
                self.assertEqual(read_one_frame(sock)[0], HELLO_ACK)
                self.assertEqual(read_one_frame(sock)[0], ACCEPTED)
                node.stop()


class ProtocolErrorTest(MeshTestCase):
    def expect_error(self, node, payload, reason, offset, reply, close_write=False):
        sock = self.connect(node)
        sock.sendall(payload)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        frames, closed, took = read_frames(sock)
        self.assertTrue(closed, f"{reason}: the node must close the connection")
        self.assertLess(took, 1.0, f"{reason}: closed at once, not at the grace period")
        if reply is None:
            self.assertEqual(frames, [])
        else:
            self.assertEqual(len(frames), 1, frames)
            t, body = frames[0]
            self.assertEqual(t, reply[0])
            if t == VERSIONS:
                self.assertEqual(body, b"\x01\x01")
            else:
                got_reason, detail = rejected_reason(body)
                self.assertEqual(got_reason, reply[1])
                self.assertTrue(detail.startswith(f"offset {offset}:"), detail)
        events = self.events_of(node, "protocol_error", reason=reason)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["offset"], offset)
        self.assertEqual(events[0]["pendingStep"], "hello")  # every case here fails before a hello completed
        self.assertEqual(events[0]["remoteAddr"], "127.0.0.1:%d" % sock.getsockname()[1])
        self.assertEqual(metric(self.metrics(node), "controller_protocol_errors_total", reason=reason), 1)

    def test_every_malformed_input_is_a_protocol_error_with_its_offset_and_reply(self):
        node = self.start_node()
        cases = [
            ("bad_magic", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, (VERSIONS,)),
            ("unsupported_version", frame(HELLO, b"\x01\x01" + s("p1") + s("zctl"), version=2), 4, (VERSIONS,)),
            ("frame_too_large", b"ZCTL\x01\x01\x00\x00\x7f\xff\xff\xf0", 8, (REJECTED, "frame_too_large")),
            ("malformed_payload", frame(HELLO, b"\x01\x01" + struct.pack(">H", 70) + b"p1"), 14,
             (REJECTED, "malformed_payload")),
            ("unexpected_message", join(self.token), 5, (REJECTED, "unexpected_message")),
        ]
        for reason, payload, offset, reply in cases:
            with self.subTest(reason=reason):
                self.expect_error(node, payload, reason, offset, reply)
                self.assert_good_join(node, node_id=f"after-{reason}")
        with self.subTest(reason="truncated"):
            self.expect_error(node, hello()[:15], "truncated", 0, None, close_write=True)
        m = self.metrics(node)
        self.assertEqual(metric(m, "controller_connection_duration_seconds_count", outcome="abnormal"), 6)
        self.assertEqual(metric(m, "controller_stray_connections_total", action="disconnect", step="hello"), 0)


class JoinTest(MeshTestCase):
    def expect_rejected(self, node, payload, reason, count=1):
        sock = self.connect(node)
        sock.sendall(payload)
        frames, closed, _ = read_frames(sock)
        self.assertTrue(closed)
        self.assertEqual(frames[-1][0], REJECTED, frames)
        self.assertEqual(rejected_reason(frames[-1][1])[0], reason)
        return self.events_of(node, "rejected", count=count, reason=reason)

    def test_refusals_name_their_reason_in_the_reply_the_event_and_the_metric(self):
        node = self.start_node(cluster_extra="  allowed_nodes: [ p1, p2, good1 ]")
        (e,) = self.expect_rejected(node, hello("p1", cluster="other"), "wrong_cluster")
        self.assertEqual(e["nodeId"], "p1")
        (e,) = self.expect_rejected(node, hello("p1") + join("not-the-token"), "bad_token")
        self.assertEqual(e["nodeId"], "p1")
        self.assertNotIn(self.token, open(node.events_file).read())
        (e,) = self.expect_rejected(node, hello("stranger") + join(self.token), "not_member")
        self.assertEqual(e["nodeId"], "stranger")
        (e,) = self.expect_rejected(node, hello(node.node_id), "duplicate_id")

        member = self.connect(node)
        member.sendall(hello("p2") + join(self.token))
        self.assertEqual(read_one_frame(member)[0], HELLO_ACK)
        t, body = read_one_frame(member)
        self.assertEqual(t, ACCEPTED)
        events = self.expect_rejected(node, hello("p2") + join(self.token), "duplicate_id", count=2)
        self.assertEqual([e["nodeId"] for e in events], [node.node_id, "p2"])
        m = self.metrics(node)
        for reason in ("wrong_cluster", "bad_token", "not_member"):
            self.assertEqual(metric(m, "controller_connection_rejections_total", reason=reason), 1, reason)
        self.assertEqual(metric(m, "controller_connection_rejections_total", reason="duplicate_id"), 2)
        self.assertEqual(metric(m, "controller_mesh_connections", state="joined"), 1)

    def test_joined_session_gets_heartbeats_and_closes_when_the_member_goes_silent(self):
        node = self.start_node()
        sock = self.connect(node)
        sock.sendall(hello("hb1") + join(self.token))
        self.assertEqual(read_one_frame(sock)[0], HELLO_ACK)
        t, body = read_one_frame(sock)
        self.assertEqual(t, ACCEPTED)
        # leader id, count, members: the Raft members; a join without advertised
        # addresses (an observer, like this one) gets a session, not membership.
        self.assertTrue(body.startswith(b"\x00\x02n1\x00\x01\x00\x02n1"), body)
        self.assertNotIn(b"hb1", body)
        # The node heartbeats every cluster.heartbeat; answering keeps the session.
        seen = []
        deadline = time.monotonic() + 1.5  # longer than election_timeout
        while time.monotonic() < deadline:
            t, body = read_one_frame(sock)
            if t == HEARTBEAT:
                term, seq = struct.unpack(">QQ", body)
                seen.append(seq)
                sock.sendall(frame(HEARTBEAT_ACK, struct.pack(">Q", seq)))
        self.assertGreaterEqual(len(seen), 8)
        self.assertEqual(seen, list(range(seen[0], seen[0] + len(seen))))
        # Our own heartbeat is answered with the same sequence.
        sock.sendall(frame(HEARTBEAT, struct.pack(">QQ", 0, 77)))
        for _ in range(10):
            t, body = read_one_frame(sock)
            if t == HEARTBEAT_ACK:
                self.assertEqual(struct.unpack(">Q", body)[0], 77)
                break
        else:
            self.fail("no heartbeat_ack")
        self.assertEqual(metric(self.metrics(node), "controller_mesh_connections", state="joined"), 1)
        # Silent from now on: closed after election_timeout (1s), outcome normal.
        _, closed, took = read_frames(sock, timeout=4)
        self.assertTrue(closed)
        self.assertLess(took, 1.0 + TOLERANCE + 0.2)
        m = self.metrics(node)
        self.assertEqual(metric(m, "controller_mesh_connections", state="joined"), 0)
        self.assertEqual(metric(m, "controller_connection_duration_seconds_count", outcome="normal"), 1)
        self.assertIn("member hb1", node.stderr())


class LimitsTest(MeshTestCase):
    def test_too_many_pending_from_one_source_is_refused_at_once_and_summarised(self):
        node = self.start_node(mesh_extra="  max_pending_per_source: 2", grace_ms=3000)
        kept = [self.connect(node) for _ in range(2)]
        time.sleep(0.2)
        refused = []
        for _ in range(5):
            sock = self.connect(node)
            frames, closed, took = read_frames(sock, timeout=2)
            self.assertTrue(closed)
            self.assertLess(took, 0.5)
            self.assertEqual([(t, rejected_reason(b)[0]) for t, b in frames], [(REJECTED, "too_many_pending")])
            refused.append(sock)
        (summary,) = self.events_of(node, "rejected")
        self.assertEqual((summary["reason"], summary["count"], summary["sources"]), ("too_many_pending", 5,
                                                                                      ["127.0.0.1"]))
        self.assertIn("max_pending_per_source", summary["detail"])
        m = self.metrics(node)
        self.assertEqual(metric(m, "controller_connection_rejections_total", reason="too_many_pending"), 5)
        self.assertEqual(metric(m, "controller_mesh_connections", state="pending"), 2)
        for sock in kept:
            sock.close()
        wait_for(lambda: metric(self.metrics(node), "controller_mesh_connections", state="pending") == 0,
                 what="kept connections to be closed")
        self.assert_good_join(node)

    def test_a_source_over_the_flood_limit_gets_one_event_per_window(self):
        node = self.start_node(mesh_extra="  flood: { window: 2s, max_connections_per_source: 3 }")
        for _ in range(8):
            self.connect(node).close()
        (event,) = self.events_of(node, "flood")
        self.assertEqual((event["source"], event["connections"], event["window"], event["windowMs"], event["limit"]),
                         ("127.0.0.1", 4, "2s", 2000, 3))
        time.sleep(0.3)
        self.assertEqual(len(self.events_of(node, "flood")), 1)
        self.assertEqual(metric(self.metrics(node), "controller_connection_floods_total"), 1)
        time.sleep(2.0)  # next window
        for _ in range(4):
            self.connect(node).close()
        self.events_of(node, "flood", count=2)


class MetricsFormatTest(MeshTestCase):
    def test_promtool_accepts_the_mesh_metrics(self):
        node = self.start_node()
        sock = self.connect(node)
        sock.sendall(b"junk")
        read_frames(sock)
        self.assert_good_join(node)
        body = self.metrics(node)
        for family in ("controller_stray_connections_total", "controller_connection_duration_seconds",
                       "controller_mesh_connections", "controller_connection_rejections_total",
                       "controller_protocol_errors_total"):
            self.assertIn(f"# TYPE {family} ", body)
        check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)


class TlsTest(MeshTestCase):
    def tls_client(self, node, pki, cert=None):
        context = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem"))
        if cert:
            context.load_cert_chain(os.path.join(pki, f"{cert}.pem"), os.path.join(pki, f"{cert}.key"))
        raw = self.connect(node)
        return context.wrap_socket(raw, server_hostname="127.0.0.1", do_handshake_on_connect=False)

    def test_only_a_client_with_a_trusted_certificate_becomes_a_member(self):
        pki = self.make_pki()
        node = self.start_node(mesh_extra=f"""  tls:
    cert_file: {pki}/server.pem
    key_file: {pki}/server.key
    ca_file: {pki}/ca.pem
    require_client_cert: true""")
        # 1. TCP only, never starts TLS: a stray at tls_handshake.
        idle = self.connect(node)
        _, closed, _ = read_frames(idle, timeout=3)
        self.assertTrue(closed)
        (stray,) = self.events_of(node, "stray")
        self.assertEqual(stray["pendingStep"], "tls_handshake")

        # 2. No certificate, then a certificate from an untrusted CA: refused.
        for cert in (None, "rogue"):
            with self.subTest(cert=cert):
                sock = self.tls_client(node, pki, cert)
                try:
                    sock.do_handshake()
                    sock.sendall(hello(f"evil-{cert}") + join(self.token))
                    data = sock.recv(4096)
                    self.assertEqual(data, b"", "no frame may reach a client without a trusted certificate")
                except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                    pass
        events = self.events_of(node, "rejected", count=2)
        self.assertEqual([e["reason"] for e in events], ["tls_failed", "tls_failed"])
        self.assertEqual(metric(self.metrics(node), "controller_connection_rejections_total", reason="tls_failed"), 2)

        # 3. A trusted client certificate: the join completes over TLS.
        sock = self.tls_client(node, pki, "client")
        sock.do_handshake()
        sock.sendall(hello("tls1") + join(self.token))
        self.assertEqual(read_one_frame(sock)[0], HELLO_ACK)
        self.assertEqual(read_one_frame(sock)[0], ACCEPTED)
        m = self.metrics(node)
        self.assertEqual(metric(m, "controller_mesh_connections", state="joined"), 1)
        self.assertNotIn("evil", "".join(str(e) for e in node.events() if e["eventType"] == "stray"))

        # 4. zctl probe --mode tls with a trusted certificate: TLS completes, then the
        #    connection stalls before hello and is closed at the grace period.
        result = self.zctl("probe", "%s:%d" % node.mesh_address, "--mode", "tls", "--connections", "2",
                           "--ca-file", f"{pki}/ca.pem", "--cert-file", f"{pki}/client.pem",
                           "--key-file", f"{pki}/client.key", "--expect-grace", f"{GRACE_MS}ms",
                           "--tolerance", f"{int(TOLERANCE * 1000)}ms", "-o", "json", timeout=30)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(json.loads(result.stdout)["closedByNode"], 2)
        strays = self.events_of(node, "stray", count=3)
        self.assertEqual([e["pendingStep"] for e in strays[1:]], ["hello", "hello"])

    def test_unreadable_tls_files_stop_the_node_with_exit_1(self):
        node = self.node("bad-tls", config="""
mesh:
  tls: { cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem, require_client_cert: false }
""")
        code, _, err = node.run_to_exit()
        self.assertEqual(code, 1, err)
        self.assertIn("mesh.tls", err)


class ProbeTest(MeshTestCase):
    """`zctl probe` against a real node: every mode passes its verdict, the
    node saw what the probe claims, and a good join still works after each."""

    def probe(self, node, *args, expect_code=0, expect_grace=f"{GRACE_MS}ms", tolerance=f"{int(TOLERANCE * 1000)}ms"):
        token_file = os.path.join(self.workdir, "token")
        result = self.zctl("probe", "%s:%d" % node.mesh_address, "--token-file", token_file,
                           "--expect-grace", expect_grace, "--tolerance", tolerance, "-o", "json", *args, timeout=60)
        self.assertEqual(result.returncode, expect_code, result.stdout + result.stderr)
        return json.loads(result.stdout)

    def test_every_mode_passes_against_a_conforming_node(self):
        node = self.start_node()
        expected_events = {  # mode -> (event type, reason or pendingStep)
            "idle": ("stray", "hello"),
            "hello": ("stray", "join"),
            "partial": ("stray", "hello"),
            "bad-magic": ("protocol_error", "bad_magic"),
            "bad-version": ("protocol_error", "unsupported_version"),
            "oversize": ("protocol_error", "frame_too_large"),
            "garbage": ("protocol_error", "bad_magic"),
        }
        seen = {"stray": 0, "protocol_error": 0}
        for mode, (event_type, what) in expected_events.items():
            with self.subTest(mode=mode):
                report = self.probe(node, "--mode", mode, "--connections", "3")
                self.assertEqual((report["mode"], report["verdict"], report["closedByNode"]), (mode, "pass", 3))
                seen[event_type] += 3
                events = self.events_of(node, event_type, count=seen[event_type])
                key = "pendingStep" if event_type == "stray" else "reason"
                self.assertEqual([e[key] for e in events[-3:]], [what] * 3)
                join_report = self.probe(node, "--mode", "join", "--node-id", f"after-{mode}")
                self.assertEqual((join_report["verdict"], join_report["replies"].get("accepted")), ("pass", 1))

    def test_wrong_expectations_fail_the_verdict_with_exit_1(self):
        node = self.start_node()
        report = self.probe(node, "--mode", "idle", expect_grace="3s", tolerance="200ms", expect_code=1)
        self.assertEqual((report["verdict"], report["early"]), ("fail", 1))
        report = self.probe(node, "--mode", "join", "--cluster-id", "elsewhere", expect_code=1)
        self.assertEqual(report["replies"], {"rejected:wrong_cluster": 1})

    def test_nothing_listening_is_exit_3(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        result = self.zctl("probe", f"127.0.0.1:{port}", "-o", "json")
        self.assertEqual(result.returncode, 3, result.stdout + result.stderr)


class ListenTest(MeshTestCase):
    def test_a_mesh_port_in_use_is_a_runtime_failure(self):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        self.addCleanup(busy.close)
        node = self.node("busy", extra_args=["--mesh", "127.0.0.1:%d" % busy.getsockname()[1]])
        code, _, err = node.run_to_exit()
        self.assertEqual(code, 4, err)
        self.assertIn("cannot listen on mesh address", err)

    def test_started_event_and_banner_name_the_mesh_address(self):
        node = self.start_node()
        started = wait_for(lambda: node.events(), what="events")[0]
        self.assertEqual(started["mesh"], "%s:%d" % node.mesh_address)


if __name__ == "__main__":
    main()
