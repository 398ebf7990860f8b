#!/bin/sh
# CI smoke test of the training pipeline: trains a few epochs on the committed feature sample
# (models/data/sample.csv.gz, labeled rows from lab runs), exports f32 and int8 ONNX into a temp
# dir and checks that the agent accepts both (`edgewatch validate --model`); splits the mini lab
# capture into its episodes (label.split_episodes) and evaluates each alone (evaluate.py
# isolated).
# Needs: python3 with models/requirements.txt, and an edgewatch binary ($EDGEWATCH, else
# target/debug/edgewatch, else target/release/edgewatch). Takes well under 2 minutes.
set -eu
cd "$(dirname "$0")/.."
BIN="${EDGEWATCH:-}"
if [ -z "$BIN" ]; then
  for b in target/debug/edgewatch target/release/edgewatch; do
    if [ -x "$b" ]; then BIN="$b"; break; fi
  done
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || { echo "smoke_test: no edgewatch binary (set EDGEWATCH or cargo build)" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 models/train.py models/data/sample.csv.gz --out-dir "$TMP" --epochs 3 --version smoke --golden "$TMP/golden.json"
for m in edgewatch-f32.onnx edgewatch-int8.onnx; do
  "$BIN" validate --model "$TMP/$m"
done
# Re-export (train.py --reexport) gives the same model, byte for byte.
cp "$TMP/golden.json" "$TMP/golden-re.json"
python3 models/train.py --reexport "$TMP" --out-dir "$TMP/re" --golden "$TMP/golden-re.json"
for m in edgewatch-f32.onnx edgewatch-int8.onnx; do
  cmp "$TMP/$m" "$TMP/re/$m"
done
cmp "$TMP/golden.json" "$TMP/golden-re.json"
python3 - "$TMP" <<'PY'
import json, os, sys
d = sys.argv[1]
r = json.load(open(os.path.join(d, "train-report.json")))
assert r["size_int8"] < 32768, r["size_int8"]
assert 0.0 < r["threshold"] < 1.0, r["threshold"]
g = json.load(open(os.path.join(d, "golden.json")))
assert len(g["inputs"]) == len(g["int8"]["score"]) > 0
print(f"smoke_test: ok (int8 model {r['size_int8']} bytes, threshold {r['threshold']:.3f})")
PY
python3 - "$TMP" "$BIN" <<'PY'
import json, os, subprocess, sys
sys.path[:0] = ["models", "models/lab"]
import label
from check_capture import read_pcap
d, binary = sys.argv[1], sys.argv[2]
episodes = label.load_attacks("tests/data/lab-mini.attacks.json")
pcaps = label.split_episodes("tests/data/lab-mini.pcap", episodes, os.path.join(d, "split"))
assert sorted(pcaps) == sorted(e["id"] for e in episodes), pcaps
for e in episodes:
    packets = list(read_pcap(pcaps[e["id"]]))
    assert packets, e["id"]
    for ts, src, dst, _ in packets:
        assert src in e["_ips"] or dst in e["_ips"], (e["id"], src, dst)
        assert e["start"] - 2 <= ts <= e["end"] + 30, (e["id"], ts)
out = os.path.join(d, "isolated.json")
subprocess.run([sys.executable, "models/evaluate.py", "isolated", "tests/data/lab-mini.pcap",
                "tests/data/lab-mini.attacks.json", "--binary", binary, "--json", out],
               check=True, stdout=subprocess.DEVNULL)
r = json.load(open(out))
assert r["captures"] == r["episodes"] == len(episodes), r
print(f"smoke_test: episodes alone ok ({r['detected']} of {r['episodes']} detected alone)")
PY
