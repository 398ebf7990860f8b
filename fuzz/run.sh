#!/bin/sh
# Runs the fuzz targets one after the other (never in parallel), SECONDS each (default 600),
# from the committed seeds plus the local working corpus; each target's libFuzzer output goes to
# fuzz/logs/<target>.log. Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -u
cd "$(dirname "$0")"
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-capture_file alert_message config parse_frame pipeline}
mkdir -p logs
for t in $targets; do
    mkdir -p "corpus/$t"
    echo "== $t: $secs s"
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"logs/$t.log" 2>&1
    echo "   exit $?; $(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "logs/$t.log" | tail -n 1)"
    grep -E 'ERROR: libFuzzer|panicked at|SUMMARY|Test unit written' "logs/$t.log" || true
done
