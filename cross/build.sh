#!/usr/bin/env bash
# Builds a static, stripped binary of edgewatch for a router target, with the size-first `router`
# profile of Cargo.toml.
#
#   cross/build.sh TARGET [cargo args...]
#   cross/build.sh aarch64-unknown-linux-musl
#   cross/build.sh armv7-unknown-linux-musleabihf --no-default-features --features mqtt
#
# The binary lands in ${CARGO_TARGET_DIR:-target}/TARGET/router/edgewatch. Extra arguments go to
# cargo as they are. The script installs what it needs (rustup targets and toolchains, Debian
# cross compilers, or zig from PyPI), checks with `file` that the result is static and stripped,
# and fails when an aarch64 router binary is over 6 MiB (EDGEWATCH_CROSS_MAX_BYTES).
# cross/README.md says which target uses which toolchain and why.
#
# Router builds of the router targets (all but x86_64) build Rust's std from source with a
# pinned nightly (-Zbuild-std), without its backtrace symbolizer, with "optimize_for_size", and
# with panic = "immediate-abort": a panic kills the process without a message.
#
# Environment:
#   EDGEWATCH_CROSS_TOOLCHAIN=gcc|zig  force the C compiler/linker (default: gcc where rustup
#                                      has the target's rust-std, for its musl; zig elsewhere)
#   EDGEWATCH_CROSS_VENV=DIR           where zig + cargo-zigbuild are installed with pip
#                                      (default: ~/.cache/edgewatch-cross/venv)
#   EDGEWATCH_CROSS_STD=prebuilt|source  rustup's std, or std built with -Zbuild-std (default:
#                                      source for router builds of router targets and where
#                                      rustup has no rust-std; prebuilt otherwise)
#   EDGEWATCH_CROSS_NIGHTLY=TOOLCHAIN  the nightly used for -Zbuild-std (default:
#                                      nightly-2026-05-20; `nightly` for the newest)
#   EDGEWATCH_CROSS_IMMEDIATE_ABORT=0|1  panic = "immediate-abort" (default: 1 for router builds
#                                      with std from source). 0 keeps panic = "abort", whose
#                                      panics print their message: 328 KB more on aarch64
#   EDGEWATCH_CROSS_MAX_BYTES=N        fail when the binary is larger than N bytes; 0: no check
#                                      (default: 6291456, 6 MiB, for aarch64 router builds)
#   EDGEWATCH_CROSS_MAP=FILE           also write the linker map of the binary to FILE, for
#                                      cross/size-report.py (relinks only the binary)
#   EDGEWATCH_CROSS_PROFILE=PROFILE    cargo profile (default: router). `dev` builds in a
#                                      fraction of the time (no LTO, dependencies at opt-level 2)
#                                      and lands in TARGET/debug/: what CI's qemu check uses
#   EDGEWATCH_CROSS_TRACT_OPT=3|z      opt-level of tract-core, -linalg and -data in the router
#                                      profile (default: 3 for x86_64; "z" for the router
#                                      targets, where 3 adds 5.4 MB: aarch64 would pass 6 MiB)
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

# 1. musl and a prebuilt std: rustup's rust-std of the target, on the default toolchain. It
#    ships Rust's std and musl's libc.a and start files ("self-contained"). mips- and
#    mipsel-unknown-linux-musl are tier 3 and have none; some mirrors lack
#    armv7-unknown-linux-musleabihf.
have_rust_std=0
tier3=0
case $target in mips-* | mipsel-*) tier3=1 ;; esac
if [[ $tier3 -eq 0 ]] && rustup target list --installed | grep -qx "$target"; then
    have_rust_std=1
elif [[ $tier3 -eq 0 ]] && rustup target add "$target" >/dev/null 2>&1; then
    note "added rustup target $target"
    have_rust_std=1
fi

profile=${EDGEWATCH_CROSS_PROFILE:-router}

# 2. Rust's std: prebuilt (rustup's rust-std) or built from source with nightly -Zbuild-std
#    (rust-src). From source where there is no prebuilt one, and for the router profile of every
#    router target: std is then compiled with the profile (opt "z", fat LTO with edgewatch,
#    no unwind tables) and with panic = "immediate-abort" (below); cross/README.md has what each
#    step saves. x86_64 and the dev profile keep rustup's std.
std=${EDGEWATCH_CROSS_STD:-}
if [[ -z $std ]]; then
    if [[ $have_rust_std -eq 0 ]]; then
        std=source
    elif [[ $profile == router && $target != x86_64-* ]]; then
        std=source
    else
        std=prebuilt
    fi
fi
cargo_tc=()
build_std=()
case $std in
prebuilt)
    [[ $have_rust_std -eq 1 ]] || die "rustup has no rust-std for $target here: EDGEWATCH_CROSS_STD=source"
    ;;
source)
    # Pinned, so that a build gives the same binary (and size) on any day.
    nightly=${EDGEWATCH_CROSS_NIGHTLY:-nightly-2026-05-20}
    note "building std from source with $nightly -Zbuild-std"
    rustup toolchain list | grep -q "^$nightly" ||
        rustup toolchain install "$nightly" --profile minimal >/dev/null ||
        die "cannot install the $nightly toolchain that -Zbuild-std needs"
    rustup component list --toolchain "$nightly" --installed | grep -qx rust-src ||
        rustup component add rust-src --toolchain "$nightly" >/dev/null ||
        die "cannot add rust-src to $nightly"
    cargo_tc=("+$nightly")
    build_std=(-Zbuild-std=std,panic_abort)
    if [[ $profile == router ]]; then
        # Without std's default features "backtrace" (the symbolizer of backtraces: gimli,
        # addr2line, object; a stripped binary has no symbols to find, 68 KB on aarch64) and
        # "panic-unwind" (nothing unwinds); with "optimize_for_size": core's and alloc's small
        # sort and formatting code (196 KB on aarch64; cross/README.md has its cost in speed).
        build_std+=(-Zbuild-std-features=optimize_for_size)
    fi
    ;;
*) die "EDGEWATCH_CROSS_STD must be prebuilt or source, not '$std'" ;;
esac

# 3. C compiler and linker. ring and tract-linalg compile C and assembly for the target.
#    gcc: Debian's cross gcc (or musl-gcc) compiles, links against the musl libc.a and crt
#         objects that rustup's rust-std ships ("self-contained"). Needs that rust-std (of
#         the default toolchain, also when std itself is built from source).
#    zig: cargo-zigbuild (pip: ziglang + cargo-zigbuild); zig brings musl for every target,
#         so it is the one for targets without a rust-std.
toolchain=${EDGEWATCH_CROSS_TOOLCHAIN:-}
if [[ -z $toolchain ]]; then
    if [[ $have_rust_std -eq 1 ]]; then toolchain=gcc; else toolchain=zig; fi
fi

# +crt-static: one static binary (also where a target's default is dynamic).
# force-unwind-tables=no: with panic = "abort" nothing unwinds. With fat LTO and rustup's
# prebuilt std it removes next to none of .eh_frame (cross/README.md); it costs nothing.
rustflags="-C target-feature=+crt-static -C force-unwind-tables=no"
case $toolchain in
gcc)
    [[ $have_rust_std -eq 1 ]] ||
        die "the gcc toolchain needs rustup's rust-std for $target (its musl); use EDGEWATCH_CROSS_TOOLCHAIN=zig"
    if [[ ${#build_std[@]} -gt 0 ]]; then
        # -Zbuild-std builds Rust's std, not musl. rustc looks for musl's start files and
        # libc.a in the nightly's rust-std, which is not installed (nor, on some mirrors,
        # to be had: 404 for aarch64 here); the default toolchain's are the same musl (1.2.5)
        # and serve: rustc finds crt1.o and the others in a -L native directory too.
        musl_dir=$(rustc --print sysroot)/lib/rustlib/$target/lib/self-contained
        [[ -f $musl_dir/crt1.o && -f $musl_dir/libc.a ]] || die "no musl crt1.o and libc.a in $musl_dir"
        rustflags+=" -L native=$musl_dir"
    fi
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
        apt_install python3-venv # Debian's python3 has no `-m venv` without it
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
# panic = "immediate-abort" (nightly; std must be built with it): a panic aborts at once
# (a trap instruction: SIGTRAP or SIGILL, by architecture) and prints nothing, so none of the panic machinery (messages, locations,
# the formatting behind them) is linked, in std and in every crate: 328 KB on aarch64.
# Router builds take it wherever std is built from source; EDGEWATCH_CROSS_IMMEDIATE_ABORT=0
# keeps the profile's panic = "abort", which prints the message first.
immediate_abort=${EDGEWATCH_CROSS_IMMEDIATE_ABORT:-}
if [[ -z $immediate_abort ]]; then
    if [[ $profile == router && ${#build_std[@]} -gt 0 ]]; then immediate_abort=1; else immediate_abort=0; fi
fi
case $immediate_abort in
    0) ;;
    1)
        [[ ${#build_std[@]} -gt 0 ]] || die "panic = \"immediate-abort\" needs std built from source (EDGEWATCH_CROSS_STD=source)"
        opt_args+=(-Zpanic-immediate-abort --config "profile.$profile.panic=\"immediate-abort\"")
        ;;
    *) die "EDGEWATCH_CROSS_IMMEDIATE_ABORT must be 0 or 1, not '$immediate_abort'" ;;
esac
note "target $target, toolchain $toolchain, std $std${build_std:+ (${build_std[*]})}, rust toolchain ${cargo_tc[*]:-(default)}, profile $profile$([[ $immediate_abort == 1 ]] && echo ', panic = "immediate-abort"')"
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
size=$(stat -c %s "$bin")
echo "$bin"
echo "  $info"
echo "  $size bytes, built in ${elapsed}s"

# The flash budget: the aarch64 router binary fits 6 MiB (default features: MQTT, TLS, pnet).
max_bytes=${EDGEWATCH_CROSS_MAX_BYTES:-}
if [[ -z $max_bytes ]]; then
    max_bytes=0
    [[ $profile == router && $target == aarch64-* ]] && max_bytes=6291456
fi
[[ $max_bytes =~ ^[0-9]+$ ]] || die "EDGEWATCH_CROSS_MAX_BYTES must be a number of bytes, not '$max_bytes'"
if [[ $max_bytes -gt 0 && $size -gt $max_bytes ]]; then
    die "$bin is $size bytes, $((size - max_bytes)) over the $max_bytes allowed for $target $profile builds.
  cross/README.md says what takes the space (cross/size-report.py) and what brought it under.
  A build that may be larger (other features, EDGEWATCH_CROSS_IMMEDIATE_ABORT=0): EDGEWATCH_CROSS_MAX_BYTES=0."
fi
