"""Shared helpers for integration tests: start real `zctl serve` processes on
loopback with their own temporary data dir, talk to them over HTTP, and stop
them by pid even when a test fails."""

import json
import os
import random
import resource
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

ZCTL = os.environ.get("ZCTL_BIN", "zctl")
TEST_PLUGIN_DIR = os.environ.get("ZCTL_TEST_PLUGIN_DIR", "")
SOURCE_DIR = os.environ.get("ZCTL_SOURCE_DIR", "")
BUILD_DIR = os.environ.get("ZCTL_BUILD_DIR", "")


def wait_for(condition, timeout=10.0, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# Below the kernel's ephemeral range (32768-60999 by default): a port the
# kernel handed out for bind(0) and we released can be taken by any outgoing
# connection of a test running in parallel before the node binds it.
_PORT_RANGE = (20000, 32767)
_port_picker = random.Random(os.getpid() ^ time.monotonic_ns())


# What a default (single-voter) node emits as it starts, in this order: a
# sole voter is announced as leader without waiting out leader_stability.
START_EVENTS = ["started", "state.has_leader", "leadership.gained"]


def free_port():
    for _ in range(200):
        port = _port_picker.randint(*_PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError(f"no free port in {_PORT_RANGE}")


def http_get(url, headers=None, timeout=5):
    """Returns (status, headers, body) without raising on HTTP errors."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def metric(text, name, **labels):
    """The value of one sample in Prometheus text, or None when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else None


def read_events(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Node:
    """One `zctl serve` process. Its stdout is captured to a file so the
    admin URL it prints can be read."""

    def __init__(self, workdir, node_id="n1", config=None, extra_args=(), env=None, nofile=None):
        self.workdir = workdir
        self.node_id = node_id
        self.data_dir = os.path.join(workdir, node_id)
        self.config_path = None
        if config is not None:
            self.config_path = os.path.join(workdir, f"{node_id}.yaml")
            with open(self.config_path, "w") as f:
                f.write(config)
        self.extra_args = list(extra_args)
        self.env = dict(os.environ, **(env or {}))
        self.nofile = nofile  # (soft, hard) RLIMIT_NOFILE to start the node with
        self.proc = None
        self.admin_url = None
        self.mesh_address = None
        self.raft_port = None
        self.stdout_path = os.path.join(workdir, f"{node_id}.stdout")
        self.stderr_path = os.path.join(workdir, f"{node_id}.stderr")

    @property
    def events_file(self):
        return os.path.join(self.data_dir, "events.jsonl")

    def args(self):
        args = [ZCTL, "serve", "--id", self.node_id, "--data-dir", self.data_dir]
        if self.config_path:
            args += ["--config", self.config_path]
        if not any(a == "--admin" for a in self.extra_args):
            args += ["--admin", "127.0.0.1:0"]
        if not any(a == "--mesh" for a in self.extra_args):
            args += ["--mesh", "127.0.0.1:0"]
        if not any(a == "--raft" for a in self.extra_args):
            if self.raft_port is None:  # kept across restarts: raft stores its address
                self.raft_port = free_port()
            args += ["--raft", f"127.0.0.1:{self.raft_port}"]
        return args + self.extra_args

    def start(self, wait=True):
        first_start = self.raft_port is None
        self.admin_url = None
        nofile = self.nofile
        self.proc = subprocess.Popen(
            self.args(), stdout=open(self.stdout_path, "w"), stderr=open(self.stderr_path, "w"), env=self.env,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile)) if nofile else None,
        )
        if wait:
            try:
                self.admin_url = wait_for(self._printed_admin_url, timeout=10, what=f"{self.node_id} to start")
            except AssertionError:
                # Another test took the raft port we picked between our check
                # and the node's bind: pick again (raft stores its address, so
                # only before the first start).
                if not (first_start and self.raft_port and f":{self.raft_port}" in self.stderr()
                        and "address already in use" in self.stderr()):
                    raise
                self.raft_port = None
                shutil.rmtree(os.path.join(self.data_dir, "raft"), ignore_errors=True)
                return self.start(wait)
            m = re.search(r"mesh\s+(\S+):(\d+)", self.stdout())
            self.mesh_address = (m.group(1), int(m.group(2))) if m else None
        return self

    def _printed_admin_url(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"zctl serve exited with {self.proc.returncode}: {self.stderr()}")
        m = re.search(r"admin API\s+(https?://\S+)", self.stdout())
        return m.group(1) if m else None

    def stdout(self):
        with open(self.stdout_path) as f:
            return f.read()

    def stderr(self):
        with open(self.stderr_path) as f:
            return f.read()

    def run_to_exit(self, timeout=10):
        """Starts the process and returns (exit code, stdout, stderr)."""
        self.start(wait=False)
        code = self.proc.wait(timeout=timeout)
        return code, self.stdout(), self.stderr()

    def get(self, path, headers=None):
        return http_get(self.admin_url + path, headers)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stopped(self):
        """True once every thread of the node is stopped (SIGSTOP), not just signalled."""
        task_dir = f"/proc/{self.proc.pid}/task"
        states = []
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                continue  # a thread that ended meanwhile
        return bool(states) and all(state in ("T", "t") for state in states)

    def stop(self, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def events(self, path=None):
        return read_events(path or self.events_file)


class NodeTestCase(unittest.TestCase):
    """Gives each test a temporary directory and kills whatever it started."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="zctl-it-")
        self.workdir = self._tmp.name
        self._nodes = []
        self._procs = []

    def tearDown(self):
        for node in self._nodes:
            node.kill()
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._tmp.cleanup()

    def node(self, *args, **kwargs):
        n = Node(self.workdir, *args, **kwargs)
        self._nodes.append(n)
        return n

    def spawn(self, args, **kwargs):
        proc = subprocess.Popen(args, **kwargs)
        self._procs.append(proc)
        return proc

    def openssl(self, *args, cwd=None):
        """Runs the openssl command (certificates for TLS tests) in `cwd`, the test's directory by default."""
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd or self.workdir)

    def make_pki(self):
        """A test CA (ca.pem/key), a server certificate for 127.0.0.1 and a
        client certificate it signed, and a self-signed "rogue" client the CA
        never saw; returns their directory."""
        d = os.path.join(self.workdir, "pki")
        os.makedirs(d)
        self.openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=zctl test CA",
                     "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
        for name in ("server", "client"):
            self.openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                         "-out", f"{name}.csr", cwd=d)
            with open(os.path.join(d, f"{name}.ext"), "w") as f:
                f.write("subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n")
            self.openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                         "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)
        self.openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rogue",
                     "-keyout", "rogue.key", "-out", "rogue.pem", cwd=d)
        return d

    def assert_sink_config_refused(self, plugin, sink, cases):
        """Each (config, message) in `cases` makes `zctl serve` exit 1 naming the sink and the message."""
        for config, message in cases:
            with self.subTest(config=config):
                node = self.node("bad", config=f"sinks:\n  - name: {sink}\n    plugin: {plugin}\n"
                                               f"    config: {json.dumps(config)}\n")
                code, _, err = node.run_to_exit()
                self.assertEqual(code, 1, err)
                self.assertIn(f"sink '{sink}' (plugin {plugin}): invalid config: ", err)
                self.assertIn(message, err)

    def assert_example_config_valid(self, relative):
        """`zctl config check` accepts the shipped example at `relative` (from the source tree)."""
        source = SOURCE_DIR or os.path.join(os.path.dirname(__file__), "..", "..")
        result = self.zctl("config", "check", os.path.join(source, relative))
        self.assertEqual(result.returncode, 0, result.stderr)

    def poke(self, node, count):
        """Makes `node` emit `count` connection/protocol_error events."""
        for _ in range(count):
            with socket.create_connection(node.mesh_address, timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    while s.recv(4096):
                        pass
                except OSError:
                    pass

    def metrics(self, node):
        code, _, body = node.get("/metrics")
        self.assertEqual(code, 200)
        return body

    def zctl(self, *args, timeout=20, env=None):
        return subprocess.run(
            [ZCTL, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **(env or {}))
        )


def main():
    """Runs the module's tests and ends with the 'N passed, N failed' line."""
    import __main__

    suite = unittest.defaultTestLoader.loadTestsFromModule(__main__)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    raise SystemExit(0 if failed == 0 and result.testsRun > 0 else 1)
