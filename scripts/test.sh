#!/usr/bin/env bash
# Runs every check of the project on a fresh Debian bookworm machine with Rust installed:
# installs what the tests need (mosquitto, iproute2, ping, openssl, Python packages), then
# cargo fmt --check, cargo clippy -D warnings, all Rust tests (collector included), the
# README's main command (checked by scripts/check_replay.py), the model pipeline smoke test, and
# the aarch64 router and mipsel dev builds under qemu-user compared with the native one
# (cross/qemu-compare.sh; it installs the aarch64 cross gcc, qemu-user-static, the rustup
# target, the pinned nightly and zig itself), which also checks that the aarch64 router binary
# fits 6 MiB (cross/build.sh fails over it).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
# The collector's tests start a throwaway PostgreSQL and load the web UI in headless Chromium.
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then
    echo "test.sh: installing ${need[*]}"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The system mosquitto service is not needed: the tests start their own brokers.
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

for req in models/requirements.txt tests/requirements.txt; do
    python3 -m pip install -q --disable-pip-version-check -r "$req"
done

echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
# One feature set for clippy and the tests (default features plus the collector), so the
# dependencies are built once.
echo "test.sh: cargo clippy"
cargo clippy --all-targets --features collector -- -D warnings
# The smallest build (no MQTT, no TLS, no pnet: live capture through the tpacket ring on Linux)
# must compile and lint clean too.
cargo clippy --all-targets --no-default-features -- -D warnings
echo "test.sh: cargo test"
cargo test --features collector
# The README's main command, exactly as written there, on a clean checkout: it must build, read
# the lab capture, alert every attack episode with its class and no benign host.
echo "test.sh: the README's main command"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo run --release -- replay tests/data/lab-mini.pcap >"$out/alerts.jsonl" 2>"$out/replay.log"
python3 scripts/check_replay.py "$out/alerts.jsonl" "$out/replay.log" tests/data/lab-mini.attacks.json
if [ -x models/smoke_test.sh ]; then
    echo "test.sh: model pipeline smoke test"
    EDGEWATCH="${CARGO_TARGET_DIR:-$PWD/target}/debug/edgewatch" models/smoke_test.sh
fi
# The cross-built binaries must print byte for byte what the native binary prints, under
# qemu-user. aarch64: the router build the packages ship (std from source, panic =
# "immediate-abort"), which cross/build.sh fails when it is over 6 MiB; on 2 cores it builds in
# less time than the aarch64 dev build (cross/README.md, "In CI"). mipsel: the 32-bit, tier-3
# target (std from source, zig, no 64-bit atomics), dev profile: debug assertions and overflow
# checks on.
native="${CARGO_TARGET_DIR:-$PWD/target}/debug/edgewatch"
echo "test.sh: aarch64 (router build, at most 6 MiB) under qemu-user vs native"
EDGEWATCH_QEMU_NATIVE="$native" cross/qemu-compare.sh aarch64-unknown-linux-musl
echo "test.sh: mipsel (dev build) under qemu-user vs native"
EDGEWATCH_CROSS_PROFILE=dev EDGEWATCH_QEMU_NATIVE="$native" cross/qemu-compare.sh mipsel-unknown-linux-musl
echo "test.sh: all checks passed"
