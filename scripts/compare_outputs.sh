#!/usr/bin/env bash
# Checks that two edgewatch builds write the same bytes: the alerts of `replay` and the CSV of
# `features`, with their exit codes, for every committed capture and the benchmark captures that
# exist (/tmp/edgewatch-bench-1000000.pcap from bench/replay.sh, /tmp/sf-500k.pcap from
# bench/synflood.py). For refactors that must not change behaviour.
#
#   scripts/compare_outputs.sh OLD_BINARY NEW_BINARY      (exit 1 on a difference)
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
same=0 differ=0
for f in tests/data/*.pcap* tests/data/public/*.pcap* /tmp/edgewatch-bench-1000000.pcap /tmp/sf-500k.pcap; do
    [ -f "$f" ] || continue
    for build in old new; do
        bin=${!build}
        rc=0; "$bin" replay "$f" >"$work/$build.alerts" 2>/dev/null || rc=$?
        echo "exit $rc" >>"$work/$build.alerts"
        rc=0; "$bin" features "$f" -o "$work/$build.csv" 2>/dev/null || rc=$?
        echo "exit $rc" >>"$work/$build.csv"
    done
    if cmp -s "$work/old.alerts" "$work/new.alerts" && cmp -s "$work/old.csv" "$work/new.csv"; then
        same=$((same + 1))
    else
        differ=$((differ + 1))
        echo "differs: $f"
    fi
done
echo "$same captures the same, $differ different"
[ "$differ" = 0 ]
