#!/usr/bin/env bash
# Start-up time of `edgewatch run` with the embedded model: from the moment the process is
# started to its "Capturing on IF" log line (millisecond timestamps), on the loopback interface.
#
#   bench/startup.sh [RUNS]          (default 5; needs CAP_NET_RAW, e.g. root)
#
# Builds the release binary first. Prints one line per run and the median.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/edgewatch"
times=()
for _ in $(seq "$runs"); do
    start=$(date +%s%N)
    line=$(timeout 5 "$bin" run --interface lo --alerts /dev/null 2>&1 | grep -m1 'Capturing on' || true)
    [ -n "$line" ] || { echo "bench/startup.sh: no 'Capturing on' line (run as root?)" >&2; exit 1; }
    # [2026-11-30T17:58:01.123Z INFO  edgewatch] Capturing on lo.
    stamp=${line#[}
    stamp=${stamp%%Z*}
    at=$(date -u -d "${stamp/T/ }" +%s%N)
    ms=$(( (at - start) / 1000000 ))
    echo "start-up to capturing: ${ms} ms"
    times+=("$ms")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { print "median: " a[int((NR + 1) / 2)] " ms over " NR " runs" }'
