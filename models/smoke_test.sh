#!/bin/sh
# CI smoke test of the training pipeline: trains a few epochs on the committed feature sample
# (models/data/sample.csv.gz, labeled rows from lab runs), exports f32 and int8 ONNX into a temp
# dir and checks that the agent accepts both (`edgewatch validate --model`).
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
