#!/usr/bin/env python3
"""The syslog sink against a real rsyslogd: each test starts `rsyslogd -n -f
CONF -i PIDFILE` with its own config in the test's temporary directory
(imudp/imtcp on loopback ports, no system inputs) and asserts on the lines
rsyslog wrote to a file, one per message: PRI, facility, severity, host name,
app name, MSGID, structured data and MSG. A real `zctl serve` emits the
events: node/started, connection/protocol_error for each garbage connection
to its mesh port, connection/stray for an idle one, node/stopping. A file
sink on the same node is the reference for which events syslog must have
received."""

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time

from sink_abi import BatchT, Event, StatusT, load_plugin
from harness import START_EVENTS, NodeTestCase, free_port, main, read_events, wait_for

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
HOSTNAME = "zctl-test-host"
SEP = "|"
# One line per message; MSG last, so a split with maxsplit never cuts it.
FIELDS = ["pri", "syslogfacility-text", "syslogseverity-text", "hostname", "app-name", "procid", "msgid",
          "structured-data", "msg"]
FIELD_TEMPLATE = SEP.join("%" + f + "%" for f in FIELDS) + "\\n"
GRACE_MS = 200


class Rsyslog:
    """One rsyslogd in the foreground with a generated config, stopped by pid."""

    def __init__(self, workdir, name, tls=None, unix=False):
        self.dir = os.path.join(workdir, name)
        os.makedirs(os.path.join(self.dir, "work"), exist_ok=True)
        self.out = os.path.join(self.dir, "messages")
        self.conf = os.path.join(self.dir, "rsyslog.conf")
        self.pidfile = os.path.join(self.dir, "rsyslogd.pid")
        self.udp_port = free_port()
        self.tcp_port = free_port()
        self.tls = tls
        self.unix_path = os.path.join(self.dir, "log.sock") if unix else None
        self.proc = None
        globals_ = f'global(workDirectory="{self.dir}/work" maxMessageSize="256k"'
        if tls:
            globals_ += (f' defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="{tls["ca"]}"'
                         f' defaultNetstreamDriverCertFile="{tls["cert"]}" defaultNetstreamDriverKeyFile="{tls["key"]}"')
        tcp_module = 'module(load="imtcp")'
        if tls:
            tcp_module = 'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")'
        unix_input = ""
        if unix:
            # Only the test's own socket: the system socket (/dev/log) stays off. The full parser
            # chain (not the local-socket shortcut) reads the sink's RFC 5424 header.
            unix_input = f'module(load="imuxsock" SysSock.Use="off")\ninput(type="imuxsock" Socket="{self.unix_path}" UseSpecialParser="off" ParseHostname="on")\n'
        with open(self.conf, "w") as f:
            f.write(f"""{globals_})
module(load="imudp")
{tcp_module}
{unix_input}template(name="fields" type="string" string="{FIELD_TEMPLATE}")
input(type="imudp" address="127.0.0.1" port="{self.udp_port}")
input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}")
*.* action(type="omfile" file="{self.out}" template="fields")
""")

    def start(self):
        if os.path.exists(self.pidfile):
            os.unlink(self.pidfile)
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", self.conf, "-i", self.pidfile],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "stderr"), "a"))
        # Ready when a probe over UDP reaches the file and the TCP port accepts.
        n = [0]

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"rsyslogd exited with {self.proc.returncode}: {self.stderr()}")
            n[0] += 1
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(f"<14>probe {n[0]}".encode(), ("127.0.0.1", self.udp_port))
            time.sleep(0.05)
            if not any("probe" in line for line in self.lines()):
                return False
            try:
                socket.create_connection(("127.0.0.1", self.tcp_port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(ready, timeout=15, what="rsyslogd to listen")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stderr(self):
        with open(os.path.join(self.dir, "stderr")) as f:
            return f.read()

    def lines(self):
        if not os.path.exists(self.out):
            return []
        with open(self.out, errors="replace") as f:
            return [line.rstrip("\n") for line in f if line.strip()]

    def messages(self, app="zctl"):
        """The messages from the sink, as dicts of FIELDS; msg parsed as JSON under 'event'."""
        out = []
        for line in self.lines():
            parts = line.split(SEP, len(FIELDS) - 1)
            if len(parts) != len(FIELDS):
                continue
            m = dict(zip(FIELDS, parts))
            if m["app-name"] != app:
                continue
            m["event"] = json.loads(m["msg"].strip())
            out.append(m)
        return out


class SyslogTest(NodeTestCase):
    def setUp(self):
        super().setUp()
        self.rsyslogs = []

    def tearDown(self):
        try:
            for node in self._nodes:
                node.kill()
        finally:
            for r in self.rsyslogs:
                r.stop()
            super().tearDown()

    def rsyslog(self, name="rsyslog", tls=None, unix=False):
        r = Rsyslog(self.workdir, name, tls, unix)
        self.rsyslogs.append(r)
        return r.start()

    def start_node(self, config, node_id="n1", retry="{ initial: 20ms, max: 100ms }"):
        self.reference = os.path.join(self.workdir, f"{node_id}-reference.jsonl")
        text = f"""mesh:
  stray: {{ grace_period: {GRACE_MS}ms, action: disconnect, log_level: warn }}
sinks:
  - name: syslog
    plugin: syslog
    retry: {retry}
    config: {json.dumps(dict({"hostname": HOSTNAME}, **config))}
  - name: reference
    plugin: file
    config: {{ path: {self.reference} }}
"""
        node = self.node(node_id, config=text).start()
        self.assertIsNotNone(node.mesh_address, node.stdout())
        return node

    def stray(self, node):
        """An idle connection to the mesh port: a connection/stray after the grace period."""
        with socket.create_connection(node.mesh_address, timeout=5) as s:
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass

    def assert_every_event_arrived(self, r, allow_duplicates=False):
        reference = read_events(self.reference)
        wait_for(lambda: {m["event"]["seq"] for m in r.messages()} >= {e["seq"] for e in reference},
                 what="every event in rsyslog's file")
        got = r.messages()
        seqs = [m["event"]["seq"] for m in got]
        self.assertEqual(sorted(set(seqs)), [e["seq"] for e in reference])
        if not allow_duplicates:
            self.assertEqual(len(seqs), len(set(seqs)), "nothing was sent twice")
        by_seq = {m["event"]["seq"]: m["event"] for m in got}
        for e in reference:
            self.assertEqual(by_seq[e["seq"]], e)
        return got

    # --- delivery -------------------------------------------------------------

    def check_delivery(self, transport, port_attr, extra=None):
        r = self.rsyslog()
        node = self.start_node(dict({"transport": transport, "address": f"127.0.0.1:{getattr(r, port_attr)}",
                                     "facility": "local3"}, **(extra or {})))
        self.poke(node, 5)
        self.stray(node)
        wait_for(lambda: any(e["eventType"] == "stray" for e in read_events(self.reference)), what="a stray event")
        self.assertEqual(node.stop(), 0)
        got = self.assert_every_event_arrived(r)
        types = [(m["event"]["namespace"], m["event"]["eventType"]) for m in got]
        self.assertEqual(types[0], ("node", "started"))
        self.assertEqual(types.count(("connection", "protocol_error")), 5)
        self.assertEqual(types[-1], ("node", "stopping"))
        for m in got:
            self.assertEqual(m["hostname"], HOSTNAME)
            self.assertEqual(m["syslogfacility-text"], "local3")
            self.assertEqual(m["procid"], str(node.proc.pid))
        return got

    def check_rfc5424_fields(self, got):
        for m in got:
            e = m["event"]
            self.assertEqual(m["msgid"], f'{e["namespace"]}/{e["eventType"]}'[:32])
            self.assertEqual(m["structured-data"],
                             f'[zctl@32473 namespace="{e["namespace"]}" eventType="{e["eventType"]}" '
                             f'seq="{e["seq"]}" src="{e["event_src_id"]}"]')
        stray = [m for m in got if m["event"]["eventType"] == "stray"][0]
        self.assertEqual(stray["pri"], str(19 * 8 + 4))  # local3.warning
        self.assertEqual(stray["syslogseverity-text"], "warning")
        started = [m for m in got if m["event"]["eventType"] == "started"][0]
        self.assertEqual(started["pri"], str(19 * 8 + 6))  # local3.info
        self.assertEqual(started["syslogseverity-text"], "info")
        error = [m for m in got if m["event"]["eventType"] == "protocol_error"][0]
        self.assertEqual(error["syslogseverity-text"], "warning")

    def test_udp_rfc5424_delivers_every_event_with_pri_and_structured_data(self):
        self.check_rfc5424_fields(self.check_delivery("udp", "udp_port"))

    def test_tcp_octet_counting_delivers_every_event_with_pri_and_structured_data(self):
        self.check_rfc5424_fields(self.check_delivery("tcp", "tcp_port"))

    def test_tcp_non_transparent_framing_and_rfc3164(self):
        got = self.check_delivery("tcp", "tcp_port", {"framing": "non_transparent", "format": "rfc3164",
                                                      "app_name": "zctl"})
        stray = [m for m in got if m["event"]["eventType"] == "stray"][0]
        self.assertEqual(stray["pri"], str(19 * 8 + 4))
        for m in got:
            self.assertEqual(m["structured-data"], "-")

    def test_a_tcp_receiver_restart_loses_nothing(self):
        r = self.rsyslog()
        node = self.start_node({"transport": "tcp", "address": f"127.0.0.1:{r.tcp_port}"})
        self.poke(node, 3)
        # Stopped only once idle: stopped while events were still arriving,
        # this test lost some (plain TCP has no acknowledgement, so what
        # rsyslog had not written when it exited looks delivered to the sender).
        first = len(START_EVENTS) + 3
        wait_for(lambda: len(read_events(self.reference)) >= first and len(r.messages()) >= first,
                 what="the first events")
        r.stop()
        self.poke(node, 3)  # while nothing listens: retried
        time.sleep(0.3)
        r.start()
        self.poke(node, 3)
        wait_for(lambda: len(read_events(self.reference)) >= first + 6, what="every event")
        self.assertEqual(node.stop(), 0)
        self.assert_every_event_arrived(r, allow_duplicates=True)
        self.assertIn("Connection refused", node.stderr())

    def test_a_unix_datagram_socket(self):
        r = self.rsyslog(unix=True)
        node = self.start_node({"transport": "unix", "address": r.unix_path})
        self.poke(node, 3)
        wait_for(lambda: len(read_events(self.reference)) >= 4, what="four events")
        self.assertEqual(node.stop(), 0)
        self.assert_every_event_arrived(r)

    def test_a_message_too_large_for_a_udp_datagram_is_rejected(self):
        """Through the C ABI with ctypes: no event of a real node is 64 KiB, so the batch is made here."""
        r = self.rsyslog()
        plugin = load_plugin("syslog")
        err = ctypes.create_string_buffer(512)
        instance = ctypes.c_void_p()
        config = json.dumps({"transport": "udp", "address": f"127.0.0.1:{r.udp_port}", "hostname": HOSTNAME})
        self.assertEqual(plugin.create(config.encode(), None, ctypes.byref(instance), err, 512), 0, err.value)
        try:
            def emit(payload, seq):
                body = json.dumps({"namespace": "node", "eventType": "started", "event_src_id": "n1",
                                   "timestamp": "2025-01-10T13:54:48.151522421-05:00", "seq": seq, "pad": payload})
                data = body.encode()
                event = Event(data, len(data), 0, seq, b"node", b"started")
                batch = BatchT(ctypes.sizeof(BatchT), 1, ctypes.pointer(event), seq, 1, 0)
                reason = ctypes.create_string_buffer(512)
                status = StatusT(ctypes.sizeof(StatusT), 0, ctypes.cast(reason, ctypes.c_char_p), 512, 0)
                return plugin.emit(instance, ctypes.byref(batch), ctypes.byref(status)), reason.value.decode()

            self.assertEqual(emit("x" * 100, 1), (0, ""))
            code, reason = emit("x" * 70000, 2)
            self.assertEqual(code, 2)  # ZCTL_SINK_REJECT
            self.assertIn("event seq 2: the syslog message is ", reason)
            self.assertIn("more than a UDP datagram can carry (65507); use transport tcp or tls", reason)
            wait_for(lambda: [m["event"]["seq"] for m in r.messages()] == [1], what="the small event only")
            m = r.messages()[0]
            self.assertEqual(m["msgid"], "node/started")
            self.assertIn('seq="1" src="n1"]', m["structured-data"])
        finally:
            plugin.destroy(instance)

    # --- TLS --------------------------------------------------------------------

    def make_tls_files(self):
        self.openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days",
                     "1", "-subj", "/CN=test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        with open(os.path.join(self.workdir, "server.ext"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        self.openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
                     "-subj", "/CN=127.0.0.1")
        self.openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                     "-out", "server.pem", "-days", "1", "-extfile", "server.ext")
        self.openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem",
                     "-days", "1", "-subj", "/CN=other-ca")
        w = self.workdir
        return {"ca": f"{w}/ca.pem", "cert": f"{w}/server.pem", "key": f"{w}/server.key", "other": f"{w}/other.pem"}

    def test_tls_verifies_the_server_and_delivers(self):
        files = self.make_tls_files()
        r = self.rsyslog(tls=files)
        node = self.start_node({"transport": "tls", "address": f"127.0.0.1:{r.tcp_port}", "ca_file": files["ca"]})
        self.poke(node, 3)
        wait_for(lambda: len(read_events(self.reference)) >= 4, what="four events")
        self.assertEqual(node.stop(), 0)
        self.assert_every_event_arrived(r)

        # A CA that did not sign the server's certificate: nothing is delivered, the batch is retried.
        before = len(r.messages())
        node = self.start_node({"transport": "tls", "address": f"127.0.0.1:{r.tcp_port}", "ca_file": files["other"]},
                               node_id="n2")
        wait_for(lambda: "certificate verify failed" in node.stderr(), what="the verification failure")
        node.kill()
        self.assertEqual(len(r.messages()), before)

    # --- configuration ----------------------------------------------------------

    def test_invalid_configs_are_refused_at_start_with_precise_messages(self):
        cases = [
            ({"transport": "smtp"}, "'transport' must be \"udp\", \"tcp\", \"tls\" or \"unix\""),
            ({"adress": "x:1"}, "unknown key 'adress' (did you mean 'address'?)"),
            ({"address": "127.0.0.1:99999"}, "'address' has an invalid port (1-65535)"),
            ({"facility": "local9"}, "'facility' must be one of"),
            ({"format": "json"}, "'format' must be \"rfc5424\" or \"rfc3164\""),
            ({"framing": "non_transparent"}, "'framing' only applies to transport tcp or tls"),
            ({"transport": "tcp", "ca_file": "/x"}, "only apply to transport tls"),
            ({"transport": "tls", "ca_file": "/nonexistent/ca.pem"},
             "'ca_file': cannot read /nonexistent/ca.pem: No such file or directory"),
            ({"app_name": "has space"}, "'app_name' must be 1-48 printable ASCII characters without spaces"),
            ({"timeout": "10"}, "'timeout' must be a duration from 1ms to 10m"),
        ]
        self.assert_sink_config_refused("syslog", "sl", cases)

    def test_example_config_is_valid(self):
        self.assert_example_config_valid("examples/sinks/syslog.yaml")


if __name__ == "__main__":
    if not os.path.exists(RSYSLOGD):
        raise SystemExit("rsyslogd not found: apt-get install -y rsyslog rsyslog-gnutls")
    main()
