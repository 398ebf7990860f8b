#!/usr/bin/env bash
# Replay throughput and peak memory of edgewatch and of the tools a user would otherwise pick,
# in one run on the same file.
#
#   bench/replay.sh [PACKETS]        (default 1000000)
#
# Builds the release binary, generates /tmp/edgewatch-bench-<PACKETS>.pcap with
# bench/gen_capture.py (seed 1) when missing, then runs one after the other:
#   edgewatch  `edgewatch replay FILE --workers N --alerts FILE`, N = 1 and 2 (default model,
#              alerts on)
#   tcpdump    `tcpdump -n -r FILE -w /dev/null`: reading the file, the floor
#   nfpcapd    `nfpcapd -r FILE -w DIR` (nfdump 1.7): NetFlow records
#   argus      `argus -r FILE -w -` to /dev/null: bidirectional flow records
#   nfstream   NFStreamer(source=FILE, statistical_analysis=True), every flow iterated
#              (bidirectional flows with statistical features, like edgewatch's)
# and prints wall seconds (/usr/bin/time), packets/s, peak RSS, and each tool's time as a
# multiple of edgewatch's with 1 worker (2.00 = it takes twice as long as edgewatch). A peer that is not installed is skipped with a note: Debian's
# tcpdump, nfdump and argus-server, and `pip install nfstream`.
set -euo pipefail
cd "$(dirname "$0")/.."
packets="${1:-1000000}"
capture="/tmp/edgewatch-bench-${packets}.pcap"
[ -f "$capture" ] || python3 bench/gen_capture.py --packets "$packets" --seed 1 -o "$capture"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/edgewatch"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

names=()
secs=()
rss=()
notes=()
# measure NAME NOTE CMD...: runs CMD (stdout to /dev/null) under /usr/bin/time.
measure() {
    local name=$1 note=$2
    shift 2
    if ! /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/err"; then
        echo "bench/replay.sh: $name failed:" >&2
        tail -5 "$work/err" >&2
        return 1
    fi
    local s k
    read -r s k <"$work/time"
    names+=("$name")
    secs+=("$s")
    rss+=("$k")
    notes+=("$note")
}
have() { command -v "$1" >/dev/null 2>&1 || { echo "bench/replay.sh: $1 not installed, skipped" >&2; return 1; }; }

for workers in 1 2; do
    rm -f "$work/alerts.jsonl" # --alerts appends
    measure "edgewatch ($workers worker$([ "$workers" = 1 ] || echo s))" "" \
        "$bin" replay "$capture" --workers "$workers" --alerts "$work/alerts.jsonl"
    notes[-1]="$(wc -l <"$work/alerts.jsonl") alerts"
done
if have tcpdump; then
    measure "tcpdump -r -w /dev/null" "read floor" tcpdump -n -r "$capture" -w /dev/null
fi
if have nfpcapd; then
    mkdir -p "$work/nfcapd"
    measure "nfpcapd -r" "" nfpcapd -r "$capture" -w "$work/nfcapd"
fi
if have argus; then
    measure "argus -r" "" argus -r "$capture" -w -
fi
if python3 -c 'import nfstream' 2>/dev/null; then
    measure "NFStream (statistical)" "" python3 -c '
import sys
from nfstream import NFStreamer
n = sum(1 for _ in NFStreamer(source=sys.argv[1], statistical_analysis=True))
print(n, "flows", file=sys.stderr)' "$capture"
    notes[-1]="$(tail -1 "$work/err")"
else
    echo "bench/replay.sh: nfstream not installed (pip install nfstream), skipped" >&2
fi

echo "capture: $capture ($packets packets, $(stat -c %s "$capture") bytes)"
printf '%-26s %9s %12s %9s %12s  %s\n' tool seconds packets/s rss_MiB "x ew(1) time" note
base=${secs[0]}
for i in "${!names[@]}"; do
    awk -v n="${names[$i]}" -v s="${secs[$i]}" -v k="${rss[$i]}" -v p="$packets" -v b="$base" -v note="${notes[$i]}" \
        'BEGIN { printf "%-26s %9.2f %12.0f %9.1f %12.2f  %s\n", n, s, p / (s > 0 ? s : 0.001), k / 1024, s / b, note }'
done
