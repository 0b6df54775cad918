#!/usr/bin/env bash
# Quick start: install what is missing, build, and run a single-node cluster
# on loopback with the embedded default configuration. Arguments go to
# `zctl serve` (e.g. --id ctrl1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec build/bin/zctl serve "$@"
