#!/usr/bin/env bash
# Builds an OpenWrt package (.ipk) of edgewatch from a static musl binary, without an OpenWrt tree.
#
#   packaging/openwrt/build-ipk.sh TARGET [OPENWRT_ARCH]
#
# TARGET is a Rust target; its OpenWrt package architecture, unless given, is:
#   aarch64-unknown-linux-musl       aarch64_cortex-a53
#   armv7-unknown-linux-musleabihf   arm_cortex-a7_neon-vfpv4
#   mipsel-unknown-linux-musl        mipsel_24kc
#   mips-unknown-linux-musl          mips_24kc
#   x86_64-unknown-linux-musl        x86_64
# The binary is ${CARGO_TARGET_DIR:-target}/TARGET/router/edgewatch (EDGEWATCH_BIN overrides it);
# when it is missing, cross/build.sh TARGET builds it. The package is written to
# ${CARGO_TARGET_DIR:-target}/ipk/edgewatch_<version>-<release>_<arch>.ipk.
#
# The .ipk is what OpenWrt's own scripts/ipkg-build writes and what opkg (opkg-lede, 23.05)
# reads: a gzip'd tar (GNU format; opkg accepts no ar archive here, unlike dpkg) holding
# ./debian-binary ("2.0"), ./data.tar.gz (the files) and ./control.tar.gz (control, conffiles,
# postinst, prerm), all owned by 0:0. The file list and modes match the feed Makefile beside this
# script. SOURCE_DATE_EPOCH (default: the last commit's time) fixes every timestamp, so the
# same binary gives the same package bytes.
set -euo pipefail

usage() {
    sed -n '2,14s/^# \{0,1\}//p' "$0" >&2
    exit 2
}
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    usage
fi
target="$1"
case "$target" in
    aarch64-unknown-linux-musl) arch=aarch64_cortex-a53 machine=AArch64 endian=little ;;
    armv7-unknown-linux-musleabihf) arch=arm_cortex-a7_neon-vfpv4 machine=ARM endian=little ;;
    mipsel-unknown-linux-musl) arch=mipsel_24kc machine=MIPS endian=little ;;
    mips-unknown-linux-musl) arch=mips_24kc machine=MIPS endian=big ;;
    x86_64-unknown-linux-musl) arch=x86_64 machine=X86-64 endian=little ;;
    *)
        echo "build-ipk.sh: unsupported target $target" >&2
        usage
        ;;
esac
arch="${2:-$arch}"

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
out_base="${CARGO_TARGET_DIR:-target}"

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
mk_version="$(sed -n 's/^PKG_VERSION:=//p' "$here/Makefile")"
release="$(sed -n 's/^PKG_RELEASE:=//p' "$here/Makefile")"
if [ "$version" != "$mk_version" ]; then
    echo "build-ipk.sh: Cargo.toml has version $version but packaging/openwrt/Makefile has PKG_VERSION $mk_version: make them equal" >&2
    exit 1
fi

bin="${EDGEWATCH_BIN:-$out_base/$target/router/edgewatch}"
if [ ! -f "$bin" ]; then
    if [ -z "${EDGEWATCH_BIN:-}" ] && [ -x cross/build.sh ]; then
        echo "build-ipk.sh: $bin is missing: cross/build.sh $target"
        cross/build.sh "$target"
    fi
    if [ ! -f "$bin" ]; then
        echo "build-ipk.sh: no binary at $bin (build it with cross/build.sh $target)" >&2
        exit 1
    fi
fi
# A binary of the wrong architecture, or one that needs a dynamic loader, would install fine
# and fail on the router: refuse it here.
header="$(readelf -h "$bin")"
if ! grep -Eq "Machine: +.*$machine" <<<"$header"; then
    echo "build-ipk.sh: $bin is not a $machine binary ($(grep 'Machine:' <<<"$header" | sed 's/^ *//'))" >&2
    exit 1
fi
# mips and mipsel share the machine: only the byte order tells them apart.
if ! grep -q "$endian endian" <<<"$header"; then
    echo "build-ipk.sh: $bin is not $endian-endian, as $target is ($(grep 'Data:' <<<"$header" | sed 's/^ *//; s/  */ /g'))" >&2
    exit 1
fi
if readelf -l "$bin" | grep -q 'INTERP'; then
    echo "build-ipk.sh: $bin is dynamically linked; OpenWrt needs a static musl binary" >&2
    exit 1
fi

export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
data="$work/data" control="$work/control" pkg="$work/pkg"
mkdir -p "$data" "$control" "$pkg"

install -d -m 0755 "$data/usr/bin" "$data/etc/init.d" "$data/etc/config" "$data/etc/capabilities"
install -m 0755 "$bin" "$data/usr/bin/edgewatch"
install -m 0755 "$here/files/edgewatch.init" "$data/etc/init.d/edgewatch"
install -m 0600 "$here/files/edgewatch.config" "$data/etc/config/edgewatch"
install -m 0644 "$here/files/edgewatch.json" "$data/etc/capabilities/edgewatch.json"

installed_size="$(du -sb --apparent-size "$data" | cut -f1)"
cat >"$control/control" <<EOF
Package: edgewatch
Version: $version-$release
Depends: libc
Source: packaging/openwrt
SourceName: edgewatch
Section: net
SourceDateEpoch: $SOURCE_DATE_EPOCH
Require-User: edgewatch:edgewatch
Maintainer: edgewatch maintainers
Architecture: $arch
Installed-Size: $installed_size
Description:  Network-anomaly sensor: captures packets, aggregates them into flows with
 per-host context, scores each flow with a compact int8 neural network and writes
 Suricata-EVE-compatible alerts to the system log, a file or an MQTT broker. It runs as
 the user edgewatch holding only CAP_NET_RAW (with procd-ujail). Configure it in
 /etc/config/edgewatch.
EOF
echo "/etc/config/edgewatch" >"$control/conffiles"
# OpenWrt's standard maintainer scripts: default_postinst adds the Require-User user and
# group, enables and starts /etc/init.d/edgewatch; default_prerm stops and disables it.
cat >"$control/postinst" <<'EOF'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_postinst $0 $@
EOF
cat >"$control/prerm" <<'EOF'
#!/bin/sh
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_prerm $0 $@
EOF
chmod 0644 "$control/control" "$control/conffiles"
chmod 0755 "$control/postinst" "$control/prerm"

# tar flags of OpenWrt's ipkg-build: reproducible, numeric root ownership, GNU format.
tar_gz() {
    local dir="$1" out="$2"
    shift 2
    (cd "$dir" && tar --format=gnu --numeric-owner --owner=0 --group=0 --sort=name \
        --mtime="@$SOURCE_DATE_EPOCH" -cf - "$@") | gzip -9n >"$out"
}
tar_gz "$data" "$pkg/data.tar.gz" .
tar_gz "$control" "$pkg/control.tar.gz" .
echo "2.0" >"$pkg/debian-binary"
mkdir -p "$out_base/ipk"
ipk="$out_base/ipk/edgewatch_${version}-${release}_${arch}.ipk"
tar_gz "$pkg" "$ipk" ./debian-binary ./data.tar.gz ./control.tar.gz
echo "build-ipk.sh: wrote $ipk ($(stat -c %s "$ipk") bytes, installed size $installed_size bytes)"
