#!/usr/bin/env python3
"""Compares int8 exports with their f32 reference on labeled feature rows (onnxruntime): the score
gap (worst, mean, 99.9th percentile), the alert decisions (score >= 0.5) and class argmaxes that
differ.

Usage: python3 models/compare_models.py F32.onnx INT8.onnx [INT8.onnx ...] --data RUN.csv.gz [...]
Needs: numpy, onnx, onnxruntime (models/requirements.txt).
"""

import argparse
import os
import sys

import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("f32")
    ap.add_argument("int8", nargs="+")
    ap.add_argument("--data", nargs="+", required=True, help="labeled CSVs (models/label.py)")
    args = ap.parse_args()
    f32 = onnx.load(args.f32)
    for path in args.data:
        x = train.load_runs([path])[1]
        s32, c32 = train.run_ort(f32, x)
        for m in args.int8:
            s8, c8 = train.run_ort(onnx.load(m), x)
            gap = np.abs(s8 - s32)
            print(f"{os.path.basename(path)} ({len(x)} rows) {m}: worst {gap.max():.4f}, mean {gap.mean():.6f}, "
                  f"99.9th pct {np.percentile(gap, 99.9):.4f}, decisions differ {int(((s8 >= 0.5) != (s32 >= 0.5)).sum())}, "
                  f"class argmax differs {int((c8.argmax(1) != c32.argmax(1)).sum())}")


if __name__ == "__main__":
    main()
