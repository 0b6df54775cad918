#!/usr/bin/env bash
# Installs the Debian 12 packages zctl needs to build and test, if missing.
# Idempotent: with everything present it only runs dpkg-query.
set -euo pipefail

BUILD_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libcli11-dev libboost-dev libboost-filesystem-dev libboost-system-dev
  libyaml-cpp-dev libspdlog-dev libfmt-dev rapidjson-dev libssl-dev libsystemd-dev
)
# Real peers and tools the test suite talks to.
TEST_PACKAGES=(catch2 python3 curl prometheus groff-base bash-completion systemd clang-14 libclang-rt-14-dev)

want=("${BUILD_PACKAGES[@]}")
if [[ "${1:-}" == "--test" ]]; then
  want+=("${TEST_PACKAGES[@]}")
fi

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
