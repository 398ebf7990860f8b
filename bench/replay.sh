#!/usr/bin/env bash
# Replay throughput and peak memory of edgewatch and of the tools a user would otherwise pick,
# in one run on the same file.
#
#   bench/replay.sh [PACKETS]        (default 1000000)
#
# Builds the release binary, generates /tmp/edgewatch-bench-<PACKETS>.pcap with
# bench/gen_capture.py (seed 1) when missing, then runs in REPEAT rounds (default 5) of one run
# of each, one after the other, so that a busy moment of a shared machine hits all tools alike:
#   edgewatch  `edgewatch replay FILE --workers N --alerts FILE`, N = 1 and 2 (default model,
#              alerts on)
#   tcpdump    `tcpdump -n -r FILE -w /dev/null`: reading the file, the floor
#   nfpcapd    `nfpcapd -r FILE -w DIR` (nfdump 1.7): NetFlow records
#   argus      `argus -r FILE -w -` to /dev/null: bidirectional flow records
#   nfstream   NFStreamer(source=FILE, statistical_analysis=True), every flow iterated
#              (bidirectional flows with statistical features, like edgewatch's)
# It prints, per tool, the median wall seconds with the fastest and slowest round, packets/s at
# the median, the highest peak RSS (/usr/bin/time), and the median as a multiple of edgewatch's
# with 1 and with 2 workers (2.00 = it takes twice as long as edgewatch).
# A peer that is not installed is skipped with a note: Debian's tcpdump, nfdump and argus-server,
# and `pip install nfstream`.
# EDGEWATCH_BIN=PATH measures that edgewatch binary instead of building the release one (to compare
# two builds under the same peers: run the script once per binary, one right after the other).
set -euo pipefail
cd "$(dirname "$0")/.."
packets="${1:-1000000}"
capture="/tmp/edgewatch-bench-${packets}.pcap"
if [ -n "${EDGEWATCH_BIN:-}" ]; then
    bin=$EDGEWATCH_BIN
    [ -x "$bin" ] || { echo "bench/replay.sh: EDGEWATCH_BIN=$bin is not an executable" >&2; exit 2; }
else
    cargo build --release --quiet
    bin="${CARGO_TARGET_DIR:-target}/release/edgewatch"
fi
[ -f "$capture" ] || python3 bench/gen_capture.py --packets "$packets" --seed 1 -o "$capture"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

repeat="${REPEAT:-5}"
[ "$repeat" -ge 1 ] 2>/dev/null || { echo "bench/replay.sh: REPEAT must be a number >= 1" >&2; exit 2; }

nfstream_py='
import sys
from nfstream import NFStreamer
n = sum(1 for _ in NFStreamer(source=sys.argv[1], statistical_analysis=True))
print(n, "flows", file=sys.stderr)'
have() { command -v "$1" >/dev/null 2>&1 || { echo "bench/replay.sh: $1 not installed, skipped" >&2; return 1; }; }

ids=(ew1 ew2)
declare -A label=([ew1]="edgewatch (1 worker)" [ew2]="edgewatch (2 workers)"
    [tcpdump]="tcpdump -r -w /dev/null" [nfpcapd]="nfpcapd -r" [argus]="argus -r"
    [nfstream]="NFStream (statistical)")
declare -A note=([tcpdump]="read floor")
have tcpdump && ids+=(tcpdump)
have nfpcapd && ids+=(nfpcapd)
have argus && ids+=(argus)
if python3 -c 'import nfstream' 2>/dev/null; then
    ids+=(nfstream)
else
    echo "bench/replay.sh: nfstream not installed (pip install nfstream), skipped" >&2
fi

# measure ID: runs the tool once under /usr/bin/time (peak RSS) and appends "microseconds rss_kib"
# to $work/ID. Wall time is taken around it with the nanosecond clock (time's %e has 10 ms steps).
measure() {
    local id=$1 t0 t1 cmd
    case $id in
        ew1 | ew2)
            rm -f "$work/alerts.jsonl" # --alerts appends
            cmd=("$bin" replay "$capture" --workers "${id#ew}" --alerts "$work/alerts.jsonl") ;;
        tcpdump) cmd=(tcpdump -n -r "$capture" -w /dev/null) ;;
        nfpcapd)
            rm -rf "$work/nfcapd" && mkdir "$work/nfcapd"
            cmd=(nfpcapd -r "$capture" -w "$work/nfcapd") ;;
        argus) cmd=(argus -r "$capture" -w -) ;;
        nfstream) cmd=(python3 -c "$nfstream_py" "$capture") ;;
    esac
    t0=$(date +%s%N)
    if ! /usr/bin/time -f '%M' -o "$work/time" "${cmd[@]}" >/dev/null 2>"$work/err"; then
        echo "bench/replay.sh: ${label[$id]} failed:" >&2
        tail -5 "$work/err" >&2
        exit 1
    fi
    t1=$(date +%s%N)
    echo "$(((t1 - t0) / 1000)) $(tail -1 "$work/time")" >>"$work/$id"
    case $id in
        ew1 | ew2) note[$id]="$(wc -l <"$work/alerts.jsonl") alerts" ;;
        nfstream) note[$id]="$(tail -1 "$work/err")" ;;
    esac
}

# Rounds: every tool once per round, in the same order, so that a busy moment of a shared
# machine falls on all of them alike. Each tool's median over the rounds is what is compared.
for round in $(seq "$repeat"); do
    echo "bench/replay.sh: round $round of $repeat" >&2
    for id in "${ids[@]}"; do measure "$id"; done
done

# median and spread (seconds) and peak RSS (KiB, the highest of the rounds) of a tool
stats() { sort -n "$work/$1" | awk '{ t[NR] = $1 / 1e6; if ($2 > k) k = $2 }
    END { m = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2; printf "%.4f %.4f %.4f %d", m, t[1], t[NR], k }'; }

echo "capture: $capture ($packets packets, $(stat -c %s "$capture") bytes), $repeat rounds, edgewatch: $bin"
printf '%-24s %8s %15s %12s %8s %8s %8s  %s\n' tool median min-max packets/s rss_MiB "x ew(1)" "x ew(2)" note
read -r ew1 _ <<<"$(stats ew1)"
read -r ew2 _ <<<"$(stats ew2)"
for id in "${ids[@]}"; do
    read -r med lo hi k <<<"$(stats "$id")"
    awk -v n="${label[$id]}" -v m="$med" -v lo="$lo" -v hi="$hi" -v k="$k" -v p="$packets" \
        -v b1="$ew1" -v b2="$ew2" -v note="${note[$id]:-}" 'BEGIN {
        printf "%-24s %8.3f %7.3f-%-7.3f %12.0f %8.1f %8.2f %8.2f  %s\n",
            n, m, lo, hi, p / (m > 0 ? m : 0.001), k / 1024, m / b1, m / b2, note }'
done
