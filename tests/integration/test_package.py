#!/usr/bin/env python3
"""The Debian package: `cpack -G DEB` builds it, its metadata pulls the
runtime libraries, and the zctl unpacked from it into a scratch root runs
and finds its own plugin."""

import os
import subprocess

from harness import BUILD_DIR, NodeTestCase, main


class PackageTest(NodeTestCase):
    def test_deb_builds_declares_dependencies_and_runs_from_a_scratch_root(self):
        out = os.path.join(self.workdir, "pkg")
        os.makedirs(out)
        build = subprocess.run(["cpack", "-G", "DEB", "-B", out], cwd=BUILD_DIR, capture_output=True, text=True)
        self.assertEqual(build.returncode, 0, build.stdout + build.stderr)
        debs = [f for f in os.listdir(out) if f.endswith(".deb")]
        self.assertEqual(len(debs), 1, os.listdir(out))
        deb = os.path.join(out, debs[0])
        self.assertRegex(debs[0], r"^zctl_\d+\.\d+\.\d+_[a-z0-9]+\.deb$")

        depends = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True, text=True).stdout
        for lib in ("libyaml-cpp", "libspdlog", "libboost-filesystem", "libfmt", "libssl", "libsystemd0", "librdkafka1",
                    "adduser"):
            self.assertIn(lib, depends)

        contents = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True).stdout
        for path in ("./usr/bin/zctl", "./usr/lib/zctl/plugins/file.so", "./usr/lib/zctl/plugins/webhook.so",
                     "./usr/lib/zctl/plugins/syslog.so", "./usr/lib/zctl/plugins/kafka.so",
                     "./usr/share/doc/zctl/examples/sinks/kafka.yaml",
                     "./usr/include/zctl/sink.h",
                     "./usr/share/man/man1/zctl.1.gz", "./usr/share/man/man1/zctl-sink.1.gz",
                     "./usr/share/man/man5/zctl.yaml.5.gz",
                     "./usr/share/man/man7/zctl-sink-plugin.7.gz",
                     "./usr/share/bash-completion/completions/zctl",
                     "./usr/share/fish/vendor_completions.d/zctl.fish",
                     "./usr/share/doc/zctl/examples/zctl.yaml",
                     "./usr/lib/systemd/system/zctl.service", "./usr/share/zctl/zctl.yaml"):
            self.assertIn(path, contents)
        self.assertNotRegex(contents, r"(?m)/usr/share/man/man\d/\S+\.\d$", "every man page compressed")

        # apt resolves it as a local package: every Depends names a package
        # and version this Debian has (simulated: the test installs nothing).
        apt = subprocess.run(["apt-get", "install", "--simulate", "--no-install-recommends", deb],
                             capture_output=True, text=True)
        self.assertEqual(apt.returncode, 0, apt.stdout + apt.stderr)
        self.assertRegex(apt.stdout, r"(?m)^Inst zctl \(\d+\.\d+\.\d+ local-deb")

        root = os.path.join(self.workdir, "root")
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
        zctl = os.path.join(root, "usr", "bin", "zctl")
        version = subprocess.run([zctl, "--version"], capture_output=True, text=True)
        self.assertEqual(version.returncode, 0, version.stderr)
        self.assertRegex(version.stdout, r"^zctl \d+\.\d+\.\d+")
        plugins = subprocess.run([zctl, "plugins", "list"], capture_output=True, text=True,
                                 env=dict(os.environ, ZCTL_PLUGIN_PATH=""))
        self.assertEqual(plugins.returncode, 0, plugins.stdout + plugins.stderr)
        self.assertIn(os.path.join(root, "usr", "lib", "zctl", "plugins", "file.so"), plugins.stdout)
        self.assertIn("file ", plugins.stdout)
        self.assertIn("webhook ", plugins.stdout)
        self.assertIn("syslog ", plugins.stdout)
        self.assertIn("kafka ", plugins.stdout)

        # The unit is valid for this systemd (pointed at the unpacked binary) ...
        unit = os.path.join(self.workdir, "zctl.service")
        with open(os.path.join(root, "usr", "lib", "systemd", "system", "zctl.service")) as f:
            text = f.read()
        self.assertIn("Type=notify", text)
        self.assertIn("ExecReload=/bin/kill -HUP $MAINPID", text)
        with open(unit, "w") as f:
            f.write(text.replace("/usr/bin/zctl", zctl))
        verify = subprocess.run(["systemd-analyze", "verify", "--man=no", unit], capture_output=True, text=True)
        self.assertEqual((verify.returncode, verify.stdout + verify.stderr), (0, ""))
        # ... the default config it starts with is valid, and postinst is shell.
        check = subprocess.run([zctl, "config", "check", os.path.join(root, "usr", "share", "zctl", "zctl.yaml")],
                               capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stderr)
        control = os.path.join(self.workdir, "control")
        subprocess.run(["dpkg-deb", "-e", deb, control], check=True)
        self.assertEqual(subprocess.run(["sh", "-n", os.path.join(control, "postinst")]).returncode, 0)
        self.assertTrue(os.access(os.path.join(control, "postinst"), os.X_OK))


if __name__ == "__main__":
    main()
