#!/usr/bin/env bash
# Configures and builds zctl (Release) into build/ (or $ZCTL_BUILD_DIR).
# Extra arguments go to cmake at configure time.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${ZCTL_BUILD_DIR:-build}
jobs=${ZCTL_JOBS:-$(nproc)}
if [[ ! -f "$build_dir/build.ninja" ]]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
elif (($# > 0)); then
  cmake "$build_dir" "$@"
fi
cmake --build "$build_dir" -j "$jobs"
