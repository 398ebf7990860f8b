#!/usr/bin/env bash
# Replay throughput and peak memory of edgewatch on the deterministic benchmark capture.
# Usage: bench/replay.sh [PACKETS] (default 1000000). Builds the release binary, generates
# /tmp/edgewatch-bench-<PACKETS>.pcap with bench/gen_capture.py (seed 1) when missing, then runs
# `edgewatch replay` with 1 and 2 workers (default model, alerts on) and prints packets/s and
# peak RSS for each.
set -euo pipefail
cd "$(dirname "$0")/.."
packets="${1:-1000000}"
capture="/tmp/edgewatch-bench-${packets}.pcap"
[ -f "$capture" ] || python3 bench/gen_capture.py --packets "$packets" --seed 1 -o "$capture"
cargo build --release --quiet
bin=target/release/edgewatch
printf '%-10s %12s %12s %10s %8s\n' workers packets/s elapsed_s rss_MiB alerts
for workers in 1 2; do
    out=$(mktemp)
    /usr/bin/time -f '%M' -o "$out.rss" "$bin" replay "$capture" --workers "$workers" --alerts "$out" 2> "$out.err"
    summary=$(grep '^replay: ' "$out.err")
    rate=$(sed -E 's/.*, ([0-9]+) packets\/s$/\1/' <<<"$summary")
    secs=$(sed -E 's/.*, ([0-9.]+) s, .*/\1/' <<<"$summary")
    rss_kib=$(tail -1 "$out.rss")
    printf '%-10s %12s %12s %10.1f %8s\n' "$workers" "$rate" "$secs" "$(awk -v k="$rss_kib" 'BEGIN { print k / 1024 }')" "$(wc -l < "$out")"
    rm -f "$out" "$out.rss" "$out.err"
done
