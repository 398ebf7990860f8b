#!/usr/bin/env bash
# edgewatch on a folder of other projects' captures: what a user meets the first time.
#
#   bench/corpus.sh DIR [RESULTS.tsv]
#
# Runs `edgewatch replay FILE --alerts FILE.jsonl --workers W` on every file under DIR (whatever
# its name: files that are not captures must be refused with a one-line error), and `capinfos -c`
# on it for the packet count libpcap's peers read. Writes one TSV row per file to RESULTS.tsv
# (default: corpus-results.tsv in the current directory), then prints:
#   - files by edgewatch's exit code (0 read, 1 failed, 2 refused as bad input), panics
#     (a "panicked" message or an abort), timeouts, and refusals that took more than one line;
#   - for the files capinfos reads completely, how many edgewatch read with the same packet count,
#     with a different count and a warning that says why (the file stops early, frames on an
#     unsupported link type), and with a different count and no word (the ones to fix);
#   - alerts per file.
# The rows whose count differs are listed at the end.
#
# Environment: EDGEWATCH_BIN (default: the release binary, built first), WORKERS (1), JOBS
# (parallel files, default: the number of CPUs), TIMEOUT_S (60 per file), KEEP_ALERTS=DIR (keep
# each file's alerts there, named after its path, e.g. to compare two worker counts). capinfos comes from
# Debian's tshark or wireshark-common. Fetch the captures yourself (bench/README.md says which
# repositories); they are not part of this repository.
set -euo pipefail

[[ $# -ge 1 && -d $1 ]] || { echo "usage: bench/corpus.sh DIR [RESULTS.tsv]" >&2; exit 2; }
dir=$(realpath "$1")
results=$(realpath -m "${2:-corpus-results.tsv}")
[[ -z ${EDGEWATCH_BIN:-} ]] || EDGEWATCH_BIN=$(realpath "$EDGEWATCH_BIN")
[[ -z ${KEEP_ALERTS:-} ]] || KEEP_ALERTS=$(realpath -m "$KEEP_ALERTS")
cd "$(dirname "$0")/.."
command -v capinfos >/dev/null || { echo "bench/corpus.sh: needs capinfos (apt-get install tshark)" >&2; exit 2; }
if [[ -n ${EDGEWATCH_BIN:-} ]]; then
    bin=$EDGEWATCH_BIN
else
    cargo build --release --quiet
    bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/edgewatch")
fi
[[ -x $bin ]] || { echo "bench/corpus.sh: no edgewatch binary at $bin" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One file: a TSV row of
#   path, capinfos (ok|partial|unreadable), capinfos packets, exit code, seconds, packets read,
#   frames on unsupported link types, alerts, "stops early" (0/1), stderr's error lines, and the
#   first error or warning line.
one() {
    local f=$1 n
    n=$(echo "$f" | md5sum | cut -c1-16)
    local err=$work/$n.err alerts=$work/$n.jsonl
    local cap_out cap_status=ok cap_packets
    if ! cap_out=$(capinfos -c -M "$f" 2>&1); then cap_status=partial; fi
    cap_packets=$(sed -n 's/^Number of packets: *\([0-9]*\).*/\1/p' <<<"$cap_out")
    if [[ -z $cap_packets ]]; then cap_status=unreadable; cap_packets=-; fi
    local start end code=0
    start=$(date +%s%N)
    # (The shell's own "Aborted" notice for a process killed by a signal is not wanted here.)
    { timeout -s KILL "${TIMEOUT_S:-60}" "$bin" replay "$f" --workers "${WORKERS:-1}" \
        --alerts "$alerts" >/dev/null 2>"$err" </dev/null || code=$?; } 2>/dev/null
    end=$(date +%s%N)
    local packets unsupported nalerts early errors first
    packets=$(sed -n 's/^replay: \([0-9]*\) packets.*/\1/p' "$err")
    unsupported=$(sed -n 's/.* \([0-9]*\) frames were on interfaces with an unsupported link type.*/\1/p' "$err")
    nalerts=$( [[ -s $alerts ]] && wc -l <"$alerts" || echo 0)
    early=$(grep -c "stops early" "$err" || true)
    errors=$(grep -c "^edgewatch: error" "$err" || true)
    # The error when there is one, else the first warning.
    first=$( { grep -m1 "^edgewatch: error" "$err" || grep -m1 -E "WARN|panicked" "$err"; } |
        sed 's/^\[[^]]*\] *//' | tr '\t' ' ' | cut -c1-200 || true)
    if grep -q "panicked" "$err" || [[ $code -eq 134 || $code -eq 101 ]]; then first="PANIC: $first"; fi
    [[ $code -eq 137 ]] && first="TIMEOUT"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${f#"$dir"/}" "$cap_status" "$cap_packets" \
        "$code" "$(( (end - start) / 1000000 ))" "${packets:--}" "${unsupported:-0}" "$nalerts" \
        "$early" "$((errors + $(grep -vc -E "^\[|^edgewatch: error|^replay: |^ *$" "$err" || true)))" "$first"
    if [[ -n ${KEEP_ALERTS:-} && -s $alerts ]]; then
        local kept=${f#"$dir"/}
        mv "$alerts" "$KEEP_ALERTS/${kept//\//__}.jsonl"
    fi
    rm -f "$err" "$alerts"
}
export -f one
if [[ -n ${KEEP_ALERTS:-} ]]; then
    mkdir -p "$KEEP_ALERTS"
    export KEEP_ALERTS
fi
export bin dir work

printf 'file\tcapinfos\tcap_packets\texit\tms\tpackets\tunsupported\talerts\tstops_early\tother_lines\tfirst_message\n' >"$results"
find "$dir" -type f -print0 | sort -z |
    xargs -0 -n 1 -P "${JOBS:-$(nproc)}" bash -c 'one "$0"' >>"$results"

python3 - "$results" <<'EOF'
import csv, sys
from collections import Counter
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print(f"{len(rows)} files")
codes = Counter(r["exit"] for r in rows)
print("exit codes: " + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())))
panics = [r for r in rows if r["first_message"].startswith("PANIC")]
hangs = [r for r in rows if r["first_message"] == "TIMEOUT"]
multi = [r for r in rows if r["exit"] == "2" and r["other_lines"] not in ("0", "1")]
print(f"panics: {len(panics)}, timeouts: {len(hangs)}, refusals of more than one line: {len(multi)}")
complete = [r for r in rows if r["capinfos"] == "ok"]
same, explained, silent = [], [], []
for r in complete:
    read = int(r["packets"]) if r["packets"].isdigit() else 0
    read += int(r["unsupported"] or 0)
    if r["exit"] == "0" and read == int(r["cap_packets"]):
        same.append(r)
    elif r["exit"] == "2" or r["stops_early"] != "0" or int(r["unsupported"] or 0) > 0:
        explained.append(r)
    else:
        silent.append(r)
print(f"capinfos reads {len(complete)} completely: edgewatch reads {len(same)} with the same "
      f"count, {len(explained)} differ with a reason given (refused, stops early, unsupported "
      f"link type), {len(silent)} differ without a word")
alerting = [int(r["alerts"]) for r in rows if r["exit"] == "0"]
print(f"alerts: {sum(alerting)} in {sum(1 for a in alerting if a)} of {len(alerting)} files read")
for name, group in (("panics", panics), ("timeouts", hangs), ("multi-line refusals", multi),
                    ("count differs without a word", silent)):
    for r in group:
        print(f"  {name}: {r['file']}: capinfos {r['cap_packets']}, edgewatch {r['packets']} "
              f"(exit {r['exit']}): {r['first_message']}")
sys.exit(1 if panics or hangs or silent else 0)
EOF
