#!/usr/bin/env python3
"""Builds edgewatch's hand-weighted baseline model and the test models derived from it.

The baseline is a real ONNX model with the shipped topology (normalization, dense 64-32-16-8 with
ReLU, sigmoid `score`, softmax `class` head) whose weights are set by hand from three rules over
the host-context features: many destination ports with failed or unanswered attempts (scan),
many incoming flows per second at a destination (flood), many outgoing flows per second from a
source (flood, brute force). It is what the agent embeds until a trained model replaces it
(models/train.py), and what the Rust tests use. Deterministic: the same files on every run.

Usage: python3 models/make_baseline_model.py [--install-default] [--out-dir models] [--test-dir tests/data/models]
Needs: numpy, onnx, onnxruntime (models/requirements.txt).
"""

import argparse
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES = ["scan", "flood", "bruteforce", "slowdos"]
HIDDEN = [64, 32, 16, 8]
VERSION = "baseline-1"


def load_schema(path):
    with open(path) as f:
        doc = json.load(f)
    return doc["schema_id"], doc["features"]


def feature_scale(name):
    """Typical magnitude of a feature; the graph divides by it (normalization in the graph)."""
    if "log1p" in name:
        return 10.0
    if name.startswith(("fwd_len", "bwd_len", "first_len")):
        return 1500.0
    if name.endswith("init_window"):
        return 65535.0
    if name.endswith("_ttl"):
        return 255.0
    return 1.0


def baseline_weights(names):
    """Dense layers (W, b) implementing the three rules; unused units stay at zero."""
    idx = {n: i for i, n in enumerate(names)}
    scale = np.array([feature_scale(n) for n in names], dtype=np.float32)
    F = len(names)
    layers = []
    w1 = np.zeros((F, HIDDEN[0]), np.float32)
    b1 = np.zeros(HIDDEN[0], np.float32)

    def term(unit, name, weight):
        # The input arrives divided by its scale: multiply back so `weight` applies to the raw value.
        w1[idx[name], unit] = weight * scale[idx[name]]

    # unit 0: scan. log1p(distinct ports) + 1.5 * failed share + unanswered share - 3.5
    term(0, "src_dst_ports_short_log1p", 1.0)
    term(0, "src_tcp_failed_share_short", 1.5)
    term(0, "src_unanswered_share_short", 1.0)
    b1[0] = -3.5
    # unit 1: flood at the destination. log1p(incoming flows/s) - 5 (about 150 flows/s)
    term(1, "dst_flows_in_per_s_short_log1p", 1.0)
    b1[1] = -5.0
    # unit 2: flood or brute force from the source. log1p(outgoing flows/s) - 3 (about 20/s)
    term(2, "src_flows_per_s_short_log1p", 1.0)
    b1[2] = -3.0
    layers.append((w1, b1))
    for n_in, n_out in zip(HIDDEN, HIDDEN[1:]):
        w = np.zeros((n_in, n_out), np.float32)
        for k in range(3):
            w[k, k] = 1.0  # pass the three rule units through (they are >= 0 after ReLU)
        layers.append((w, np.zeros(n_out, np.float32)))
    w_score = np.zeros((HIDDEN[-1], 1), np.float32)
    w_score[:3, 0] = 4.0
    b_score = np.array([-2.0], np.float32)
    w_class = np.zeros((HIDDEN[-1], len(CLASSES)), np.float32)
    w_class[0, 0] = 4.0  # scan
    w_class[1, 1] = 4.0  # flood (destination side)
    w_class[2, 1] = 2.0  # flood (source side)
    w_class[2, 2] = 1.5  # brute force shares the source-rate evidence
    b_class = np.array([0.0, 0.0, -0.5, -1.0], np.float32)
    return scale, layers, (w_score, b_score), (w_class, b_class)


def quantize_weight(w):
    s = float(np.max(np.abs(w))) / 127.0 or 1.0
    q = np.clip(np.round(w / s), -127, 127).astype(np.int8)
    return q, np.float32(s)


class Graph:
    def __init__(self, quantize, act_ranges):
        self.nodes, self.inits, self.n = [], [], 0
        self.quantize, self.act_ranges = quantize, act_ranges

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base, array):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(array, n))
        return n

    def node(self, op, inputs, base, **attrs):
        out = self.name(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def qdq(self, x, scale):
        """Quantize-dequantize an activation (static, per-tensor, symmetric int8)."""
        s = self.const("act_scale", np.float32(scale))
        z = self.const("act_zero", np.int8(0))
        q = self.node("QuantizeLinear", [x, s, z], "q")
        return self.node("DequantizeLinear", [q, s, z], "dq")

    def dense(self, x, w, b, layer):
        if self.quantize:
            x = self.qdq(x, self.act_ranges[layer] / 127.0)
            q, s = quantize_weight(w)
            wq = self.const("w_int8", q)
            ws = self.const("w_scale", s)
            wz = self.const("w_zero", np.int8(0))
            wname = self.node("DequantizeLinear", [wq, ws, wz], "w")
        else:
            wname = self.const("w", w)
        y = self.node("MatMul", [x, wname], "matmul")
        return self.node("Add", [y, self.const("b", b)], "add")


def build(names, schema_id, quantize=False, act_ranges=None, with_class=True, width=None, schema_override=None):
    scale, layers, (ws, bs), (wc, bc) = baseline_weights(names)
    F = width or len(names)
    if width is not None and width != len(names):
        scale = scale[:F]
        layers = [(layers[0][0][:F], layers[0][1])] + layers[1:]
    g = Graph(quantize, act_ranges or {})
    mean = g.const("norm_mean", np.zeros(F, np.float32))
    std = g.const("norm_std", scale.astype(np.float32))
    x = g.node("Sub", ["features", mean], "centered")
    x = g.node("Div", [x, std], "normalized")
    for i, (w, b) in enumerate(layers):
        x = g.node("Relu", [g.dense(x, w, b, i)], "relu")
    logit = g.dense(x, ws, bs, len(layers))
    g.nodes.append(helper.make_node("Sigmoid", [logit], ["score"], name="score"))
    outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])]
    if with_class:
        logits = g.dense(x, wc, bc, len(layers) + 1)
        g.nodes.append(helper.make_node("Softmax", [logits], ["class"], name="class", axis=-1))
        outputs.append(helper.make_tensor_value_info("class", TensorProto.FLOAT, ["N", len(CLASSES)]))
    graph = helper.make_graph(
        g.nodes,
        "edgewatch",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", F])],
        outputs,
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgewatch")
    model.ir_version = 8
    meta = {
        "edgewatch.feature_schema": schema_override or schema_id,
        "edgewatch.classes": ",".join(CLASSES),
        "edgewatch.threshold": "0.5",
        "edgewatch.version": VERSION + ("-int8" if quantize else ""),
        "edgewatch.name": "edgewatch-baseline",
    }
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    return model


def sample_inputs(names, n, seed):
    """Plausible feature vectors (benign-looking and attack-looking) for calibration and goldens."""
    rng = np.random.default_rng(seed)
    scale = np.array([feature_scale(x) for x in names], np.float32)
    x = rng.uniform(0, 1.0, size=(n, len(names))).astype(np.float32) * scale * 0.6
    idx = {nm: i for i, nm in enumerate(names)}
    for row in range(n):
        kind = row % 4
        if kind == 1:
            x[row, idx["src_dst_ports_short_log1p"]] = rng.uniform(3, 6)
            x[row, idx["src_tcp_failed_share_short"]] = rng.uniform(0.7, 1)
        elif kind == 2:
            x[row, idx["dst_flows_in_per_s_short_log1p"]] = rng.uniform(5, 9)
        elif kind == 3:
            x[row, idx["src_flows_per_s_short_log1p"]] = rng.uniform(3, 7)
    return x


def activation_ranges(model_f32, names, n_layers):
    """Calibrate activation ranges on sample data with onnxruntime (max |x| at each dense input)."""
    import onnxruntime as ort

    # Expose every dense layer input as an extra output.
    m = onnx.ModelProto()
    m.CopyFrom(model_f32)
    dense_inputs = [n.input[0] for n in m.graph.node if n.op_type == "MatMul"]
    for name in dense_inputs:
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(dense_inputs, {"features": sample_inputs(names, 512, 1)})
    return {i: max(float(np.max(np.abs(o))), 1e-3) for i, o in enumerate(outs)}


def save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--schema", default=os.path.join(HERE, "feature_schema.json"))
    ap.add_argument("--out-dir", default=HERE)
    ap.add_argument("--test-dir", default=os.path.join(HERE, "..", "tests", "data", "models"))
    ap.add_argument("--install-default", action="store_true", help="also make it the embedded default model")
    args = ap.parse_args()
    schema_id, names = load_schema(args.schema)

    f32 = build(names, schema_id)
    ranges = activation_ranges(f32, names, len(HIDDEN) + 2)
    int8 = build(names, schema_id, quantize=True, act_ranges=ranges)
    save(f32, os.path.join(args.test_dir, "baseline.onnx"))
    if args.install_default:
        save(f32, os.path.join(args.out_dir, "edgewatch-default.onnx"))
    save(int8, os.path.join(args.test_dir, "baseline-int8.onnx"))
    save(build(names, schema_id, with_class=False), os.path.join(args.test_dir, "score-only.onnx"))
    save(build(names, schema_id, schema_override="ew1-60-0000000000000000"), os.path.join(args.test_dir, "wrong-schema.onnx"))
    save(build(names, schema_id, width=len(names) - 1), os.path.join(args.test_dir, "wrong-width.onnx"))
    # Declares the right width, but its graph takes one feature less: it passes the checks made
    # at load and fails when tract optimizes it.
    broken = build(names, schema_id, width=len(names) - 1)
    broken.graph.input[0].type.tensor_type.shape.dim[1].dim_value = len(names)
    save(broken, os.path.join(args.test_dir, "broken-graph.onnx"))

    # Golden vectors: onnxruntime's outputs for both models, for the Rust test to match.
    import onnxruntime as ort

    x = sample_inputs(names, 16, 2)
    golden = {"schema_id": schema_id, "inputs": x.tolist()}
    for label, model in (("f32", f32), ("int8", int8)):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        score, cls = sess.run(["score", "class"], {"features": x})
        golden[label] = {"score": score[:, 0].tolist(), "class": cls.tolist()}
    gap = float(np.max(np.abs(np.array(golden["f32"]["score"]) - np.array(golden["int8"]["score"]))))
    golden["int8_vs_f32_worst_score_gap"] = gap
    path = os.path.join(args.test_dir, "golden.json")
    with open(path, "w") as f:
        json.dump(golden, f)
    print(f"wrote {path}; onnxruntime int8 vs f32 worst score gap {gap:.4f}")


if __name__ == "__main__":
    main()
