#!/usr/bin/env bash
# Installs the Debian 12 packages zctl needs to build, and with --test and --bench also to test
# and to run the benchmarks, if missing.
# Idempotent: with everything present it only runs dpkg-query.
set -euo pipefail

BUILD_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libcli11-dev libboost-dev libboost-filesystem-dev libboost-system-dev
  libyaml-cpp-dev libspdlog-dev libfmt-dev rapidjson-dev libssl-dev libsystemd-dev
  libraft-dev libuv1-dev librdkafka-dev
)
# Real peers and tools the test suite talks to.
TEST_PACKAGES=(catch2 python3 curl openssl prometheus groff-base bash-completion systemd clang-14 libclang-rt-14-dev rsyslog rsyslog-gnutls kcat iproute2)
# Benchmarks under bench/: nginx is the reference server of bench/mesh_flood.py and the webhook
# receiver of bench/sinks.py, which also talks to rsyslogd and runs logger; kcat is the
# reference producer of bench/kafka_bench.py; etcd is the reference cluster of bench/failover.py;
# perf traces the accepts of bench/accept_lag.py.
BENCH_PACKAGES=(python3 nginx rsyslog bsdutils kcat etcd-server etcd-client linux-perf)

want=("${BUILD_PACKAGES[@]}")
for arg in "$@"; do
  case "$arg" in
    --test) want+=("${TEST_PACKAGES[@]}") ;;
    --bench) want+=("${BENCH_PACKAGES[@]}") ;;
    *) echo "usage: $0 [--test] [--bench]" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "Installing missing Debian packages: ${missing[*]}"
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
