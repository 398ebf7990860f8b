#!/usr/bin/env bash
# Runs a command and prints its resident memory every INTERVAL seconds (default 1), then its
# exact peak (GNU time's maximum resident set size). Needs GNU time (Debian package "time"). For the flood benchmark:
#
#   python3 bench/synflood.py --packets 5000000 -o /tmp/sf-5m.pcap
#   bench/rss-curve.sh target/release/edgewatch replay /tmp/sf-5m.pcap --alerts /dev/null
#
# INTERVAL=2 bench/rss-curve.sh ... samples every 2 s.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
interval=${INTERVAL:-1}
peak_file=$(mktemp)
trap 'rm -f "$peak_file"' EXIT
/usr/bin/time -o "$peak_file" -f '%M' "$@" &
timer=$!
start=$(date +%s.%N)
while kill -0 "$timer" 2>/dev/null; do
    pid=$(pgrep -P "$timer" | head -1 || true)
    if [ -n "$pid" ] && rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null) && [ -n "$rss" ]; then
        printf 't=%6.1fs rss=%6.1f MiB\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$(echo "$rss/1024" | bc -l)"
    fi
    sleep "$interval"
done
status=0
wait "$timer" || status=$?
printf 'peak RSS %.1f MiB (exit %d)\n' "$(echo "$(tail -1 "$peak_file")/1024" | bc -l)" "$status"
exit "$status"
