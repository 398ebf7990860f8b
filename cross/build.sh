#!/usr/bin/env bash
# Builds a static, stripped binary of edgewatch for a router target, with the size-first `router`
# profile of Cargo.toml.
#
#   cross/build.sh TARGET [cargo args...]
#   cross/build.sh aarch64-unknown-linux-musl
#   cross/build.sh armv7-unknown-linux-musleabihf --no-default-features --features mqtt
#
# The binary lands in ${CARGO_TARGET_DIR:-target}/TARGET/router/edgewatch. Extra arguments go to
# cargo as they are. The script installs what it needs (rustup targets, Debian cross compilers,
# or zig from PyPI) and checks with `file` that the result is static and stripped.
# cross/README.md says which target uses which toolchain and why.
#
# Environment:
#   EDGEWATCH_CROSS_TOOLCHAIN=gcc|zig  force the C compiler/linker (default: gcc; zig with -Zbuild-std)
#   EDGEWATCH_CROSS_VENV=DIR           where zig + cargo-zigbuild are installed with pip
#                                      (default: ~/.cache/edgewatch-cross/venv)
#   EDGEWATCH_CROSS_NIGHTLY=TOOLCHAIN  the nightly used for -Zbuild-std (default: nightly)
#   EDGEWATCH_CROSS_MAP=FILE           also write the linker map of the binary to FILE, for
#                                      cross/size-report.py (relinks only the binary)
#   EDGEWATCH_CROSS_PROFILE=PROFILE    cargo profile (default: router). `dev` builds in a
#                                      fraction of the time (no LTO, dependencies at opt-level 2)
#                                      and lands in TARGET/debug/: what CI's qemu check uses
#   EDGEWATCH_CROSS_TRACT_OPT=3|z      opt-level of tract-core, -linalg and -data in the router
#                                      profile (default: 3 for x86_64; "z" for the router
#                                      targets, where 3 adds 5.4 MB: aarch64 would pass 8 MiB)
set -euo pipefail

die() { echo "cross/build.sh: $*" >&2; exit 1; }
note() { echo "cross/build.sh: $*" >&2; }

[[ $# -ge 1 ]] || die "usage: cross/build.sh TARGET [cargo args...]"
target=$1
shift

cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
export CARGO_TARGET_DIR=$target_dir

# Upper-case and underscore forms used by cargo's and the cc crate's environment variables.
t_env=$(echo "$target" | tr 'a-z-' 'A-Z_')
t_cc=$(echo "$target" | tr '-' '_')

case $target in
    x86_64-unknown-linux-musl) gnu=x86_64-linux-gnu deb_arch=amd64 ;;
    aarch64-unknown-linux-musl) gnu=aarch64-linux-gnu deb_arch=arm64 ;;
    armv7-unknown-linux-musleabihf) gnu=arm-linux-gnueabihf deb_arch=armhf ;;
    mipsel-unknown-linux-musl) gnu=mipsel-linux-gnu deb_arch=mipsel ;;
    mips-unknown-linux-musl) gnu=mips-linux-gnu deb_arch=mips ;;
    *) die "unsupported target '$target' (x86_64-unknown-linux-musl, aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf, mipsel-unknown-linux-musl, mips-unknown-linux-musl)" ;;
esac

apt_install() {
    # Installs Debian packages that are missing; apt-get update only when something is.
    local missing=()
    for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "need Debian packages ${missing[*]} (no apt-get here)"
    local sudo=; [[ $(id -u) -eq 0 ]] || sudo=sudo
    note "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# 1. Rust standard library for the target. Tier 2 targets come from rustup; a target whose
#    rust-std rustup cannot get (mips- and mipsel-unknown-linux-musl are tier 3 and have none; some mirrors
#    lack armv7-unknown-linux-musleabihf) is built with nightly and -Zbuild-std from rust-src.
cargo_tc=()
build_std=()
tier3=0
case $target in mips-* | mipsel-*) tier3=1 ;; esac
if [[ $tier3 -eq 0 ]] && rustup target list --installed | grep -qx "$target"; then
    :
elif [[ $tier3 -eq 0 ]] && rustup target add "$target" >/dev/null 2>&1; then
    note "added rustup target $target"
else
    nightly=${EDGEWATCH_CROSS_NIGHTLY:-nightly}
    note "no prebuilt rust-std for $target: building std from source with $nightly -Zbuild-std"
    rustup toolchain list | grep -q "^$nightly" ||
        rustup toolchain install "$nightly" --profile minimal >/dev/null ||
        die "cannot install the $nightly toolchain that -Zbuild-std needs"
    rustup component list --toolchain "$nightly" --installed | grep -qx rust-src ||
        rustup component add rust-src --toolchain "$nightly" >/dev/null ||
        die "cannot add rust-src to $nightly"
    cargo_tc=("+$nightly")
    build_std=(-Zbuild-std=std,panic_abort)
fi

# 2. C compiler and linker. ring and tract-linalg compile C and assembly for the target.
#    gcc: Debian's cross gcc (or musl-gcc) compiles, links against the musl libc.a and crt
#         objects that rustup's rust-std ships ("self-contained"). Needs that rust-std.
#    zig: cargo-zigbuild (pip: ziglang + cargo-zigbuild); zig brings musl for every target,
#         so it is the one that works with -Zbuild-std, where rust-std's musl is missing.
toolchain=${EDGEWATCH_CROSS_TOOLCHAIN:-}
if [[ -z $toolchain ]]; then
    if [[ ${#build_std[@]} -gt 0 ]]; then toolchain=zig; else toolchain=gcc; fi
fi

# +crt-static: one static binary (also where a target's default is dynamic).
# force-unwind-tables=no: with panic = "abort" nothing unwinds. With fat LTO and rustup's
# prebuilt std it removes next to none of .eh_frame (cross/README.md); it costs nothing.
rustflags="-C target-feature=+crt-static -C force-unwind-tables=no"
case $toolchain in
gcc)
    [[ ${#build_std[@]} -eq 0 ]] ||
        die "the gcc toolchain needs rustup's rust-std for $target (its musl); use EDGEWATCH_CROSS_TOOLCHAIN=zig"
    if [[ $target == x86_64-* ]]; then
        apt_install musl-tools gcc binutils file
        export "CC_$t_cc=musl-gcc" "AR_$t_cc=ar"
        export "CARGO_TARGET_${t_env}_LINKER=cc"
    else
        # The C headers come from libc6-dev-ARCH-cross (only a Recommends of the cross gcc);
        # ring's and tract's C needs nothing beyond what glibc and musl headers agree on.
        apt_install "gcc-$gnu" "binutils-$gnu" "libc6-dev-$deb_arch-cross" file
        export "CC_$t_cc=$gnu-gcc" "AR_$t_cc=$gnu-ar"
        export "CARGO_TARGET_${t_env}_LINKER=$gnu-gcc"
    fi
    ;;
zig)
    venv=${EDGEWATCH_CROSS_VENV:-$HOME/.cache/edgewatch-cross/venv}
    if [[ ! -x $venv/bin/cargo-zigbuild || ! -x $venv/bin/python-zig ]]; then
        note "installing ziglang and cargo-zigbuild (PyPI) into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q ziglang cargo-zigbuild
    fi
    export PATH="$venv/bin:$PATH"
    apt_install file
    if [[ ${#build_std[@]} -gt 0 ]]; then
        # rust-std's self-contained crt1.o/libc.a are not there with -Zbuild-std: let zig's
        # driver bring musl's start files and libc instead.
        rustflags+=" -C link-self-contained=no"
    fi
    ;;
*) die "EDGEWATCH_CROSS_TOOLCHAIN must be gcc or zig, not '$toolchain'" ;;
esac

# Target-specific flags, so that build scripts and proc macros (host) are not affected.
var="CARGO_TARGET_${t_env}_RUSTFLAGS"
export "$var=${!var:+${!var} }$rustflags"

# The binary is linked by `cargo rustc`, so that link-only flags reach its link alone (changing
# them relinks the binary and rebuilds no dependency):
#   --no-eh-frame-hdr  with panic = "abort" nothing unwinds; the .eh_frame_hdr lookup table
#                      (387 KB, 4.5% of the aarch64 binary) only served RUST_BACKTRACE, which
#                      then prints no frames; a panic still prints its message. (gcc/GNU ld
#                      only; armv7 unwinds with .ARM.exidx and has no such table.)
#   -Map=FILE          with EDGEWATCH_CROSS_MAP, for cross/size-report.py
link_args=()
[[ $toolchain == gcc ]] && link_args+=(-C link-arg=-Wl,--no-eh-frame-hdr)
if [[ -n ${EDGEWATCH_CROSS_MAP:-} ]]; then
    [[ $toolchain == gcc ]] || die "EDGEWATCH_CROSS_MAP needs the gcc toolchain (GNU ld's map)"
    map=$EDGEWATCH_CROSS_MAP
    case $map in /*) ;; *) map=$OLDPWD/$map ;; esac
    link_args+=(-C "link-arg=-Wl,-Map=$map")
fi
cmd=(cargo "${cargo_tc[@]}" rustc)
if [[ $toolchain == zig ]]; then
    # `cargo-zigbuild rustc` is `cargo rustc` with zig as C compiler and linker.
    [[ ${#cargo_tc[@]} -gt 0 ]] && export RUSTUP_TOOLCHAIN=${cargo_tc[0]#+}
    cmd=(cargo-zigbuild rustc)
fi
note "target $target, toolchain $toolchain${build_std:+, ${build_std[*]}}, rust toolchain ${cargo_tc[*]:-(default)}"
profile=${EDGEWATCH_CROSS_PROFILE:-router}
case $profile in
    dev) out_dir=debug ;;
    *) out_dir=$profile ;;
esac
# The tract crates that run the model at opt-level 3 make replay 3-9 % faster; x86_64 builds
# them so, the router targets at "z" like everything else, to stay under 8 MiB.
tract_opt=${EDGEWATCH_CROSS_TRACT_OPT:-}
if [[ -z $tract_opt ]]; then
    if [[ $target == x86_64-* ]]; then tract_opt=3; else tract_opt=z; fi
fi
case $tract_opt in
    3) tract_level=3 ;;
    z) tract_level='"z"' ;;
    *) die "EDGEWATCH_CROSS_TRACT_OPT must be 3 or z, not '$tract_opt'" ;;
esac
opt_args=()
if [[ $profile == router ]]; then
    for crate in tract-core tract-linalg tract-data; do
        opt_args+=(--config "profile.router.package.$crate.opt-level=$tract_level")
    done
    note "tract-core, tract-linalg and tract-data at opt-level $tract_opt"
fi
start=$(date +%s)
"${cmd[@]}" --profile "$profile" --locked --target "$target" "${build_std[@]}" "${opt_args[@]}" \
    --bin edgewatch "$@" \
    -- "${link_args[@]}"
elapsed=$(( $(date +%s) - start ))

bin=$target_dir/$target/$out_dir/edgewatch
[[ -f $bin ]] || die "no binary at $bin"
info=$(file -b "$bin")
case $info in *"statically linked"* | *"static-pie linked"*) ;; *) die "$bin is not static: $info" ;; esac
if [[ $profile != dev ]]; then
    case $info in *", stripped"*) ;; *) die "$bin is not stripped: $info" ;; esac
fi
echo "$bin"
echo "  $info"
echo "  $(stat -c %s "$bin") bytes, built in ${elapsed}s"
