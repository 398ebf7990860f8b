#!/usr/bin/env bash
# Builds the Debian package of edgewatch with cargo-deb ([package.metadata.deb] in Cargo.toml).
#
#   packaging/debian/build-deb.sh [amd64|arm64]      (default: amd64)
#
# The package carries the static musl binary of cross/build.sh (amd64: x86_64-unknown-linux-musl,
# arm64: aarch64-unknown-linux-musl), taken from ${CARGO_TARGET_DIR:-target}/TARGET/router/
# and built first when it is missing. The .deb is written to
# ${CARGO_TARGET_DIR:-target}/debian/edgewatch_<version>-<revision>_<arch>.deb.
# cargo-deb is taken from PATH, else from ${CARGO_TARGET_DIR:-target}/tools/bin, where it is
# installed (cargo install cargo-deb --locked) when missing.
set -euo pipefail

arch="${1:-amd64}"
case "$arch" in
    amd64) target=x86_64-unknown-linux-musl ;;
    arm64) target=aarch64-unknown-linux-musl ;;
    *)
        sed -n '2,10s/^# \{0,1\}//p' "$0" >&2
        exit 2
        ;;
esac

cd "$(dirname "$0")/../.."
out_base="${CARGO_TARGET_DIR:-target}"
case "$out_base" in /*) ;; *) out_base="$PWD/$out_base" ;; esac

bin="$out_base/$target/router/edgewatch"
if [ ! -f "$bin" ]; then
    echo "build-deb.sh: $bin is missing: cross/build.sh $target"
    cross/build.sh "$target"
fi

# The conffile is the documented default config; a stale copy would ship old documentation.
if "$bin" --version >/dev/null 2>&1 &&
    ! "$bin" generate-config | cmp -s - packaging/debian/edgewatch.toml; then
    echo "build-deb.sh: packaging/debian/edgewatch.toml differs from \`edgewatch generate-config\`:" >&2
    echo "  $bin generate-config > packaging/debian/edgewatch.toml" >&2
    exit 1
fi

cargo_deb="$(command -v cargo-deb || true)"
if [ -z "$cargo_deb" ]; then
    cargo_deb="$out_base/tools/bin/cargo-deb"
    if [ ! -x "$cargo_deb" ]; then
        echo "build-deb.sh: installing cargo-deb into $out_base/tools"
        cargo install cargo-deb --locked --root "$out_base/tools"
    fi
fi

mkdir -p "$out_base/debian"
# --no-build: package the binary as cross/build.sh made it (static, already stripped).
CARGO_TARGET_DIR="$out_base" "$cargo_deb" --no-build --no-strip --target "$target" --profile router \
    --output "$out_base/debian/"
