#!/usr/bin/env bash
# Runs the cross-built binaries under qemu-user and compares their output byte for byte with
# the native x86_64 build's.
#
#   cross/qemu-compare.sh [TARGET...] [-- cargo args...]
#   cross/qemu-compare.sh                                  # aarch64, armv7, mipsel and mips
#   cross/qemu-compare.sh mips-unknown-linux-musl          # big-endian MIPS only
#   cross/qemu-compare.sh aarch64-unknown-linux-musl -- --no-default-features
#
# Each binary (built by cross/build.sh, the native one as x86_64-unknown-linux-musl) reads
# tests/data/lab-mini.pcap three ways:
#   alerts    replay --alerts FILE                      (the default config and embedded model)
#   scores    replay with threshold 0 and no merging    (one alert, so one score, per evaluation)
#             and --model models/edgewatch-default.onnx (the model loaded from a file)
#   features  features -o FILE.csv                       (the model's input vectors)
# and the script prints a table and exits 1 when any output differs from the native one.
# Outputs are kept in ${CARGO_TARGET_DIR:-target}/qemu-compare/TARGET/.
# EDGEWATCH_QEMU_SKIP_BUILD=1 uses the binaries already built.
# EDGEWATCH_CROSS_PROFILE=dev builds (and looks for) the dev profile's binaries, as cross/build.sh.
# EDGEWATCH_QEMU_NATIVE=BIN takes BIN (e.g. the target/debug/edgewatch that `cargo test` built) as
# the reference instead of building x86_64-unknown-linux-musl. CI runs
#   EDGEWATCH_QEMU_NATIVE=target/debug/edgewatch cross/qemu-compare.sh aarch64-unknown-linux-musl
#   EDGEWATCH_CROSS_PROFILE=dev EDGEWATCH_QEMU_NATIVE=target/debug/edgewatch \
#       cross/qemu-compare.sh mipsel-unknown-linux-musl
set -euo pipefail

cd "$(dirname "$0")/.."
targets=()
while [[ $# -gt 0 && $1 != -- ]]; do targets+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
cargo_args=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf
    mipsel-unknown-linux-musl mips-unknown-linux-musl)

target_dir=${CARGO_TARGET_DIR:-target}
case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
export CARGO_TARGET_DIR=$target_dir
native=x86_64-unknown-linux-musl
pcap=tests/data/lab-mini.pcap
model=models/edgewatch-default.onnx
out_root=$target_dir/qemu-compare
mkdir -p "$out_root"

config=$out_root/scores.toml
cat >"$config" <<'EOF'
sensor_id = "qemu-compare"
[model]
threshold = 0.0
[alert]
mode = "flow"
max_alerts_per_s = 1000000000.0
EOF

qemu_for() {
    case $1 in
        x86_64-*) echo "" ;;
        aarch64-*) echo qemu-aarch64-static ;;
        armv7-*) echo qemu-arm-static ;;
        mipsel-*) echo qemu-mipsel-static ;;
        mips-*) echo qemu-mips-static ;;  # big-endian: the check for byte-order bugs
        *) echo "cross/qemu-compare.sh: no qemu for $1" >&2; return 1 ;;
    esac
}

need_qemu=0
for t in "${targets[@]}"; do
    q=$(qemu_for "$t")
    [[ -n $q ]] && ! command -v "$q" >/dev/null && need_qemu=1
done
if [[ $need_qemu -eq 1 ]]; then
    sudo=; [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
fi

# Runs one binary three ways into DIR; prints the seconds the alerts run took.
run_all() {
    local t=$1 bin=$2 dir=$3 q
    q=$(qemu_for "$t")
    mkdir -p "$dir"
    rm -f "$dir"/alerts.jsonl "$dir"/scores.jsonl "$dir"/features.csv
    local start end
    start=$(date +%s%N)
    $q "$bin" replay "$pcap" --workers 2 --alerts "$dir/alerts.jsonl" 2>"$dir/alerts.stderr"
    end=$(date +%s%N)
    $q "$bin" replay "$pcap" --workers 2 --config "$config" --model "$model" \
        --alerts "$dir/scores.jsonl" 2>"$dir/scores.stderr"
    $q "$bin" features "$pcap" --workers 2 -o "$dir/features.csv" 2>"$dir/features.stderr"
    printf "%d.%02d\n" $(( (end - start) / 1000000000 )) $(( (end - start) / 10000000 % 100 ))
}

profile_dir=${EDGEWATCH_CROSS_PROFILE:-router}
[[ $profile_dir == dev ]] && profile_dir=debug

build() {
    if [[ ${EDGEWATCH_QEMU_SKIP_BUILD:-0} != 1 ]]; then
        # `|| return`: set -e does not apply inside `if ! bin=$(build ...)`, and a failed build
        # (or a binary over cross/build.sh's size limit) must not compare the binary it left.
        cross/build.sh "$1" "${cargo_args[@]}" >&2 || return 1
    fi
    local bin=$target_dir/$1/$profile_dir/edgewatch
    [[ -x $bin ]] || { echo "cross/qemu-compare.sh: no binary $bin" >&2; return 1; }
    echo "$bin"
}

if [[ -n ${EDGEWATCH_QEMU_NATIVE:-} ]]; then
    native_bin=$(realpath "$EDGEWATCH_QEMU_NATIVE")
    [[ -x $native_bin ]] || { echo "cross/qemu-compare.sh: no binary $EDGEWATCH_QEMU_NATIVE" >&2; exit 1; }
else
    native_bin=$(build "$native")
fi
native_secs=$(run_all "$native" "$native_bin" "$out_root/$native")

status=0
rows=()
for t in "${targets[@]}"; do
    [[ $t == "$native" ]] && continue
    if ! bin=$(build "$t"); then
        rows+=("$(printf '%-34s %-10s %-10s %-10s %s' "$t" "-" "-" "-" "build failed")")
        status=1
        continue
    fi
    dir=$out_root/$t
    if ! secs=$(run_all "$t" "$bin" "$dir"); then
        rows+=("$(printf '%-34s %-10s %-10s %-10s %s' "$t" "-" "-" "-" "run failed (see $dir/*.stderr)")")
        status=1
        continue
    fi
    cells=()
    for f in alerts.jsonl scores.jsonl features.csv; do
        if cmp -s "$out_root/$native/$f" "$dir/$f"; then
            cells+=("same")
        else
            cells+=("DIFFERENT")
            status=1
        fi
    done
    rows+=("$(printf '%-34s %-10s %-10s %-10s %ss under qemu' "$t" "${cells[@]}" "$secs")")
done

echo
echo "reference: $native_bin (native, ${native_secs}s)"
for f in alerts.jsonl scores.jsonl features.csv; do
    printf '  %-13s %8s lines %10s bytes\n' "$f" "$(wc -l <"$out_root/$native/$f")" "$(stat -c %s "$out_root/$native/$f")"
done
printf '%-34s %-10s %-10s %-10s %s\n' target alerts scores features time
for r in "${rows[@]}"; do echo "$r"; done
[[ $status -eq 0 ]] && echo "all outputs identical to the native build" ||
    echo "DIFFERENCES or failures: compare the files under $out_root/ (diff TARGET/FILE $native/FILE)"
exit $status
