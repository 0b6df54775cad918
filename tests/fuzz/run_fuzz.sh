#!/usr/bin/env bash
# Builds the mesh protocol fuzz target with clang++-14 (libFuzzer, ASan,
# UBSan) straight from core/src/mesh_protocol.cpp -- no CMake -- and runs it
# for a bounded time over the seed corpus in tests/fuzz/corpus/mesh/.
#
# Usage: tests/fuzz/run_fuzz.sh [SECONDS]     (default 20)
# Environment: CXX (default clang++-14), FUZZ_BUILD_DIR (default: a temporary
# directory, removed on success and kept on failure for the crash input).
#
# Exits non-zero when the target crashes, a sanitizer reports, a property
# check in the target fails, or the build fails. New inputs go to a working
# copy of the corpus; the checked-in seeds are never modified.

set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SECONDS_TO_RUN=${1:-20}
CXX=${CXX:-clang++-14}

if ! [[ $SECONDS_TO_RUN =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]   (a positive whole number, default 20)" >&2
    exit 2
fi

fail() {
    echo "FAIL - $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

command -v "$CXX" >/dev/null 2>&1 || fail "$CXX not found (Debian: apt-get install clang-14)"

if [[ -n ${FUZZ_BUILD_DIR:-} ]]; then
    BUILD=$FUZZ_BUILD_DIR
    mkdir -p "$BUILD" || fail "cannot create $BUILD"
    keep_build=1
else
    BUILD=$(mktemp -d "${TMPDIR:-/tmp}/zctl-fuzz.XXXXXX") || fail "cannot create a build directory"
    keep_build=0
fi

TARGET=$BUILD/fuzz_mesh_protocol
echo "building $TARGET"
if ! "$CXX" -std=c++20 -g -O1 -Wall -Wextra \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        -I"$ROOT/core/src" \
        "$ROOT/core/src/mesh_protocol.cpp" "$ROOT/tests/fuzz/fuzz_mesh_protocol.cpp" \
        -o "$TARGET"; then
    fail "the fuzz target does not build (build directory kept: $BUILD)"
fi

WORK_CORPUS=$BUILD/corpus
mkdir -p "$WORK_CORPUS"

echo "fuzzing for ${SECONDS_TO_RUN}s (seeds: tests/fuzz/corpus/mesh)"
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$TARGET" \
    -max_total_time="$SECONDS_TO_RUN" \
    -max_len=4096 \
    -timeout=10 \
    -rss_limit_mb=2048 \
    -print_final_stats=1 \
    -dict="$ROOT/tests/fuzz/mesh.dict" \
    -artifact_prefix="$BUILD/" \
    "$WORK_CORPUS" "$ROOT/tests/fuzz/corpus/mesh" \
    >"$BUILD/fuzz.log" 2>&1
status=$?

tail -n 25 "$BUILD/fuzz.log"
if ((status != 0)); then
    shopt -s nullglob
    artifacts=("$BUILD"/crash-* "$BUILD"/leak-* "$BUILD"/timeout-* "$BUILD"/oom-*)
    echo "fuzz target exited with status $status; log: $BUILD/fuzz.log" >&2
    for a in "${artifacts[@]}"; do
        echo "reproduce: $TARGET $a" >&2
    done
    fail "mesh protocol fuzzing found a problem"
fi

((keep_build)) || rm -rf "$BUILD"
echo "ok   - mesh protocol fuzzing, ${SECONDS_TO_RUN}s, no findings"
echo "1 passed, 0 failed"
