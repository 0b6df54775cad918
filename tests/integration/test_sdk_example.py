#!/usr/bin/env python3
"""The SDK works for a third party: install zctl into a scratch prefix, build
sdk/examples/counter-sink out of tree with find_package(zctl-sdk) against
that prefix, and have the installed zctl load it."""

import json
import os
import subprocess

from harness import BUILD_DIR, SOURCE_DIR, NodeTestCase, main, wait_for
import harness


class SdkExampleTest(NodeTestCase):
    def test_out_of_tree_sink_builds_against_the_installed_sdk_and_loads(self):
        prefix = os.path.join(self.workdir, "prefix")
        subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", prefix], check=True, capture_output=True)
        installed_zctl = os.path.join(prefix, "bin", "zctl")
        listing = subprocess.run([installed_zctl, "plugins", "list"], capture_output=True, text=True)
        self.assertEqual(listing.returncode, 0, listing.stdout + listing.stderr)
        self.assertIn(os.path.join(prefix, "lib", "zctl", "plugins", "file.so"), listing.stdout)

        example_build = os.path.join(self.workdir, "counter-build")
        configure = subprocess.run(
            ["cmake", "-S", os.path.join(SOURCE_DIR, "sdk", "examples", "counter-sink"), "-B", example_build,
             f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release"],
            capture_output=True, text=True)
        self.assertEqual(configure.returncode, 0, configure.stdout + configure.stderr)
        build = subprocess.run(["cmake", "--build", example_build], capture_output=True, text=True)
        self.assertEqual(build.returncode, 0, build.stdout + build.stderr)
        self.assertTrue(os.path.exists(os.path.join(example_build, "counter.so")))

        counts = os.path.join(self.workdir, "counts.json")
        config = (f"plugins: {{ path: [{example_build}, {os.path.join(prefix, 'lib', 'zctl', 'plugins')}] }}\n"
                  f"sinks:\n  - name: counts\n    plugin: counter\n    config: {{ path: {counts} }}\n")
        harness.ZCTL = installed_zctl
        try:
            node = self.node("n1", config=config).start()
            wait_for(lambda: os.path.exists(counts) and json.load(open(counts)).get("total") == len(harness.START_EVENTS),
                     what="counter file")
            self.assertEqual(node.stop(), 0)
        finally:
            harness.ZCTL = os.environ.get("ZCTL_BIN", "zctl")
        # started and stopping; the cluster's has_leader and leadership.gained
        self.assertEqual(json.load(open(counts))["namespaces"], {"node": 2, "cluster": 2})


if __name__ == "__main__":
    main()
