#!/usr/bin/env bash
# The whole test suite: install what is missing, build Release with warnings
# as errors, run every test (unit, integration against real peers, docs),
# fuzz the mesh frame parser for a bounded time, then build and run the unit
# and serve/watch tests again under ASan+UBSan.
# Set ZCTL_SKIP_SANITIZE=1 to skip the sanitizer pass locally.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

start=$(date +%s)
ZCTL_BUILD_DIR=build scripts/build.sh -DZCTL_WERROR=ON
built=$(date +%s)
(cd build && ctest --output-on-failure -j 2)
# The mesh frame parser under libFuzzer (clang-14, ASan+UBSan), bounded.
tests/fuzz/run_fuzz.sh "${ZCTL_FUZZ_SECONDS:-30}"
tested=$(date +%s)
echo "release build: $((built - start)) s, tests: $((tested - built)) s"

if [[ "${ZCTL_SKIP_SANITIZE:-0}" != 1 ]]; then
  # Sanitizers: the unit tests (in-process workers, fakes, parsers) and the
  # serve integration test on a sanitized binary.
  ZCTL_BUILD_DIR=build-asan scripts/build.sh -DZCTL_WERROR=ON -DZCTL_SANITIZE=ON -DZCTL_BUILD_BENCH=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  (cd build-asan && ctest --output-on-failure -j 2 -R '^(unit|integration_serve|integration_watch|integration_mesh)$')
  echo "sanitizer build and tests: $(($(date +%s) - tested)) s"
fi
