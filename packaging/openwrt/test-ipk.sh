#!/usr/bin/env bash
# Checks OpenWrt packages made by build-ipk.sh the way opkg will see them:
#
#   packaging/openwrt/test-ipk.sh [IPK...]    (default: every ${CARGO_TARGET_DIR:-target}/ipk/*.ipk)
#
# For each package: the outer archive is a gzip'd GNU/ustar tar of ./debian-binary,
# ./data.tar.gz, ./control.tar.gz (what opkg-lede unpacks; it takes no ar archive); the control
# fields, conffiles and maintainer scripts; every file, its owner (0:0) and mode; the binary's
# machine and static linking; the capabilities file; and the UCI config the package ships,
# enabled, turned by the init script into a TOML config that `edgewatch validate` accepts.
# A runnable edgewatch for that last check: the packaged one when it runs here (x86_64, or
# through qemu-user), else $EDGEWATCH, else ${CARGO_TARGET_DIR:-target}/{release,debug}/edgewatch.
# Also runs shellcheck on the packaging scripts when it is installed. Exits 1 on any failure.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
out_base="${CARGO_TARGET_DIR:-target}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
release="$(sed -n 's/^PKG_RELEASE:=//p' "$here/Makefile")"

passed=0
failed=0
check() {
    local what="$1"
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $what" >&2
    fi
}
same() { [ "$1" = "$2" ] || { echo "  expected: $2" >&2; echo "  got:      $1" >&2; return 1; }; }

if [ $# -gt 0 ]; then
    ipks=("$@")
else
    shopt -s nullglob
    ipks=("$out_base"/ipk/*.ipk)
    shopt -u nullglob
fi
if [ ${#ipks[@]} -eq 0 ]; then
    echo "test-ipk.sh: no package to check (build one with packaging/openwrt/build-ipk.sh TARGET)" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The expected machine (readelf), qemu-user program and byte order for an OpenWrt architecture.
machine_of() {
    case "$1" in
        aarch64_*) echo "AArch64 aarch64 little" ;;
        arm_*) echo "ARM arm little" ;;
        mipsel_*) echo "MIPS mipsel little" ;;
        mips_*) echo "MIPS mips big" ;;
        x86_64) echo "X86-64 x86_64 little" ;;
        *) echo "unknown unknown unknown" ;;
    esac
}

# An edgewatch that runs on this machine, for the config check.
runner_for() {
    local bin="$1" qemu="$2"
    if "$bin" --version >/dev/null 2>&1; then
        echo "$bin"
    elif command -v "qemu-$qemu-static" >/dev/null 2>&1 && "qemu-$qemu-static" "$bin" --version >/dev/null 2>&1; then
        echo "qemu-$qemu-static $bin"
    else
        local candidate
        for candidate in "${EDGEWATCH:-}" "$out_base/release/edgewatch" "$out_base/debug/edgewatch"; do
            if [ -n "$candidate" ] && [ -x "$candidate" ]; then
                echo "$candidate"
                return
            fi
        done
    fi
}

for ipk in "${ipks[@]}"; do
    echo "test-ipk.sh: $ipk"
    name="$(basename "$ipk" .ipk)"
    dir="$work/$name"
    mkdir -p "$dir/outer" "$dir/control" "$dir/data"

    check "outer archive is gzip, not ar" \
        test "$(head -c 2 "$ipk" | od -An -tx1 | tr -d ' ')" = "1f8b"
    check "outer tar has a ustar/GNU header (opkg checks the magic)" \
        test "$(gzip -dc "$ipk" | head -c 262 | tail -c 5)" = "ustar"
    check "outer members, in ipkg-build's order" \
        same "$(tar -tzf "$ipk" | tr '\n' ' ')" "./debian-binary ./data.tar.gz ./control.tar.gz "
    if ! { tar -xzf "$ipk" -C "$dir/outer" &&
        tar -xzf "$dir/outer/control.tar.gz" -C "$dir/control" &&
        tar -xzf "$dir/outer/data.tar.gz" -C "$dir/data"; }; then
        echo "FAIL: cannot unpack $ipk" >&2
        failed=$((failed + 1))
        continue
    fi
    check "debian-binary is 2.0" same "$(cat "$dir/outer/debian-binary")" "2.0"

    control="$dir/control/control"
    field() { sed -n "s/^$1: *//p" "$control"; }
    check "Package" same "$(field Package)" "edgewatch"
    check "Version" same "$(field Version)" "$version-$release"
    arch="$(field Architecture)"
    check "Architecture is a known OpenWrt one" test "$(machine_of "$arch")" != "unknown unknown unknown"
    check "file name is edgewatch_<version>_<arch>.ipk" same "$name" "edgewatch_$version-${release}_$arch"
    check "Depends" same "$(field Depends)" "libc"
    check "Require-User (default_postinst creates the user)" same "$(field Require-User)" "edgewatch:edgewatch"
    check "Description is not empty" test -n "$(field Description)"
    data_size="$(du -sb --apparent-size "$dir/data" | cut -f1)"
    check "Installed-Size is the unpacked size" same "$(field Installed-Size)" "$data_size"
    check "conffiles lists the UCI config" same "$(cat "$dir/control/conffiles")" "/etc/config/edgewatch"
    check "control members" \
        same "$(tar -tvzf "$dir/outer/control.tar.gz" | awk '{print $1, $2, $6}' | sort | tr '\n' ';')" \
        "-rw-r--r-- 0/0 ./conffiles;-rw-r--r-- 0/0 ./control;-rwxr-xr-x 0/0 ./postinst;-rwxr-xr-x 0/0 ./prerm;drwxr-xr-x 0/0 ./;"
    # shellcheck disable=SC2016 # the scripts' own text, not expanded here
    check "postinst calls default_postinst" grep -qxF 'default_postinst $0 $@' "$dir/control/postinst"
    # shellcheck disable=SC2016
    check "prerm calls default_prerm" grep -qxF 'default_prerm $0 $@' "$dir/control/prerm"
    for script in postinst prerm; do
        check "$script is valid sh" sh -n "$dir/control/$script"
    done

    check "data files, owners and modes" \
        same "$(tar -tvzf "$dir/outer/data.tar.gz" | awk '{print $1, $2, $6}' | sort -k3 | tr '\n' ';')" \
        "drwxr-xr-x 0/0 ./;drwxr-xr-x 0/0 ./etc/;drwxr-xr-x 0/0 ./etc/capabilities/;-rw-r--r-- 0/0 ./etc/capabilities/edgewatch.json;drwxr-xr-x 0/0 ./etc/config/;-rw------- 0/0 ./etc/config/edgewatch;drwxr-xr-x 0/0 ./etc/init.d/;-rwxr-xr-x 0/0 ./etc/init.d/edgewatch;drwxr-xr-x 0/0 ./usr/;drwxr-xr-x 0/0 ./usr/bin/;-rwxr-xr-x 0/0 ./usr/bin/edgewatch;"
    check "init script is the one in files/" cmp -s "$dir/data/etc/init.d/edgewatch" "$here/files/edgewatch.init"
    check "UCI config is the one in files/" cmp -s "$dir/data/etc/config/edgewatch" "$here/files/edgewatch.config"
    check "capabilities file grants CAP_NET_RAW and nothing else" python3 -c '
import json, sys
caps = json.load(open(sys.argv[1]))
sets = ("bounding", "effective", "ambient", "permitted", "inheritable")
assert sorted(caps) == sorted(sets), caps
assert all(caps[s] == ["CAP_NET_RAW"] for s in sets), caps
' "$dir/data/etc/capabilities/edgewatch.json"

    bin="$dir/data/usr/bin/edgewatch"
    read -r machine qemu endian <<<"$(machine_of "$arch")"
    check "binary is a $machine ELF" grep -Eq "Machine: +.*$machine" <(readelf -h "$bin")
    check "binary is $endian-endian (mips and mipsel share the machine)" \
        grep -q "$endian endian" <(readelf -h "$bin")
    check "binary is statically linked" bash -c "! readelf -l '$bin' | grep -q INTERP"

    runner="$(runner_for "$bin" "$qemu")"
    if [ -z "$runner" ]; then
        echo "FAIL: no runnable edgewatch for the config check (set EDGEWATCH)" >&2
        failed=$((failed + 1))
        continue
    fi
    sed "s/option enabled '0'/option enabled '1'/" "$dir/data/etc/config/edgewatch" >"$dir/uci"
    mkdir -p "$dir/render"
    check "init script renders the packaged UCI config" \
        sh "$here/render-init.sh" "$dir/uci" "$dir/render" jail
    # shellcheck disable=SC2086 # $runner may be "qemu-ARCH-static BIN"
    check "edgewatch validate ($runner) accepts the rendered config" \
        $runner validate --config "$dir/render/edgewatch.toml"
    check "procd runs it as edgewatch with CAP_NET_RAW only, no new privileges" \
        grep -q "procd_set_param capabilities" "$dir/render/procd.log"
    for line in "procd_set_param user edgewatch" "procd_set_param group edgewatch" \
        "procd_set_param no_new_privs 1" "procd_set_param respawn 3600 5 5" \
        "procd_set_param command /usr/bin/edgewatch run --config $dir/render/edgewatch.toml"; do
        check "procd: $line" grep -qxF "$line" "$dir/render/procd.log"
    done
done

if command -v shellcheck >/dev/null 2>&1; then
    check "shellcheck build-ipk.sh test-ipk.sh render-init.sh" \
        shellcheck -x "$here/build-ipk.sh" "$here/test-ipk.sh" "$here/render-init.sh"
    check "shellcheck edgewatch.init (as OpenWrt's ash script)" \
        shellcheck -s sh -e SC2034,SC2154,SC3043 "$here/files/edgewatch.init"
else
    echo "test-ipk.sh: shellcheck is not installed; scripts not linted"
fi

echo "test-ipk.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
