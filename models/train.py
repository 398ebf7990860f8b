#!/usr/bin/env python3
"""Trains edgewatch's detection model on labeled lab runs and exports it as ONNX (f32 and int8).

Model (the seed architecture of DESIGN.md): normalization inside the graph ((x - mean) / std as
one product x · diag(1 / std) - mean / std, Clip to [-1, 1], where mean / std are the centre and
half-width of each feature's training range, so one per-tensor int8 scale fits every feature),
then dense 64-32-16-8 with ReLU, a sigmoid `score` head (binary cross-entropy) and a
softmax `class` head over scan, flood, bruteforce, slowdos (cross-entropy on attack rows only), both
fed by the 8-unit layer. Plain numpy (Adam, mini-batches); --seed fixes initialization and
shuffling (multithreaded BLAS may still change the last bits, so two runs can differ slightly).

Rows are weighted so that every attack class counts the same whatever its row count (half per row
within the class, half per episode, so one huge flood episode does not drown the rest) and the
benign rows together count --benign-weight times the attack total. Within the benign total, a row
whose source or destination is a lab attacker (label.py's `attacker` column: the attackers' own
ordinary traffic around their attacks, which the host context makes look like the attack) weighs
--attacker-benign-weight times an ordinary benign row (default 1: all benign rows alike), and a
row of the public captures (label.py --public: runs named public-<repo>) --public-benign-weight
times. The normalization ranges come from the lab runs alone when there are any: a public capture's
outliers (a day-long flow, a jumbo frame) saturate at the range's end instead of widening it and
coarsening every lab feature's int8 grid.

The int8 model is static, per-tensor: weights int8 symmetric (max |w| / 127), activations
quantized at every dense layer's input with a scale calibrated on training rows (the percentile of
|x| that gives the smallest quantization error), in integer ONNX operators (one QLinearConv per
hidden layer, its ReLU included; see build_int8_layers). The threshold (metadata edgewatch.threshold) is
chosen on the training rows with the int8 model: the lowest score whose benign false-positive rate
stays under --target-fpr (never below --min-threshold).

Usage:
  python3 models/train.py DATA/run-a.csv.gz DATA/run-b.csv.gz ... --out-dir OUT [--epochs 40]
Writes OUT/edgewatch-f32.onnx, OUT/edgewatch-int8.onnx, OUT/train-report.json, and with
--golden PATH golden vectors (inputs + onnxruntime outputs of both models) for tests/trained_model.rs.
Needs: numpy, onnx, onnxruntime (models/requirements.txt).
"""

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import label as lab_label  # noqa: E402

CLASSES = ["scan", "flood", "bruteforce", "slowdos"]
HIDDEN = [64, 32, 16, 8]
CLIP = 1.0
NAME = "edgewatch-mlp"


# ----------------------------------------------------------------------------------------- data
def load_runs(paths):
    xs, ys, cs, eps, runs, atts, names = [], [], [], [], [], [], None
    for p in paths:
        _, feat_names, _, x, extra = lab_label.load_features(p)
        if "label" not in extra:
            sys.exit(f"{p} has no label column: make it with models/label.py")
        if names is None:
            names = feat_names
        elif names != feat_names:
            sys.exit(f"{p}: feature columns differ from the first file")
        xs.append(x)
        ys.append(np.array(extra["label"], dtype=np.float32))
        cs.append(np.array([CLASSES.index(c) if c in CLASSES else -1 for c in extra["class"]], np.int64))
        eps.append(np.array(extra["episode"], dtype=np.int64))
        runs.append(np.array(extra["run"], dtype=object))
        # Files labeled before the `attacker` column: no row is marked (all benign rows alike).
        atts.append(np.array(extra.get("attacker") or [0] * len(x), dtype=np.int8))
    return (names, np.concatenate(xs), np.concatenate(ys), np.concatenate(cs), np.concatenate(eps), np.concatenate(runs),
            np.concatenate(atts))


def public_rows(runs):
    """Rows of public captures (label.py --public names their runs public-<repo>)."""
    return np.array([str(r).startswith("public-") for r in runs], bool)


def row_weights(y, cls, ep, runs, benign_weight, attacker=None, attacker_benign_weight=1.0, public_benign_weight=1.0):
    w = np.zeros(len(y), np.float64)
    ben = y == 0
    # Benign rows share benign_weight x the attack total; an attacker's benign row counts
    # attacker_benign_weight ordinary ones, a public capture's row public_benign_weight.
    share = np.ones(len(y), np.float64)
    if attacker is not None:
        share[attacker == 1] = attacker_benign_weight
    share[public_rows(runs)] = public_benign_weight
    w[ben] = benign_weight * len(CLASSES) * share[ben] / max(share[ben].sum(), 1e-12)
    for c in range(len(CLASSES)):
        m = cls == c
        if not m.any():
            continue
        w[m] += 0.5 / m.sum()
        keys = [f"{r}/{e}" for r, e in zip(runs[m], ep[m])]
        uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
        w[np.where(m)[0]] += 0.5 / (len(uniq) * counts[inv])
    return (w / w.mean()).astype(np.float32)


# ---------------------------------------------------------------------------------------- model
def init_params(n_in, rng):
    sizes = [n_in] + HIDDEN
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers.append([rng.normal(0, np.sqrt(2.0 / a), (a, b)).astype(np.float32), np.zeros(b, np.float32)])
    score = [rng.normal(0, np.sqrt(1.0 / HIDDEN[-1]), (HIDDEN[-1], 1)).astype(np.float32), np.zeros(1, np.float32)]
    klass = [rng.normal(0, np.sqrt(1.0 / HIDDEN[-1]), (HIDDEN[-1], len(CLASSES))).astype(np.float32), np.zeros(len(CLASSES), np.float32)]
    return layers + [score, klass]


def forward(params, x):
    acts = [x]
    h = x
    for w, b in params[:-2]:
        h = np.maximum(h @ w + b, 0.0)
        acts.append(h)
    logit = h @ params[-2][0] + params[-2][1]
    clog = h @ params[-1][0] + params[-1][1]
    return acts, logit[:, 0], clog


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def loss_and_grads(params, x, y, cls, w, class_weight, l2):
    acts, logit, clog = forward(params, x)
    n = len(x)
    p = sigmoid(logit)
    eps = 1e-7
    bce = -(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))
    loss = float((w * bce).sum() / n)
    dlogit = (w * (p - y) / n)[:, None]
    att = cls >= 0
    dclog = np.zeros_like(clog)
    if att.any():
        sm = softmax(clog[att])
        ce = -np.log(sm[np.arange(att.sum()), cls[att]] + eps)
        wa = w[att]
        loss += class_weight * float((wa * ce).sum() / n)
        g = sm.copy()
        g[np.arange(att.sum()), cls[att]] -= 1.0
        dclog[att] = class_weight * g * wa[:, None] / n
    h = acts[-1]
    grads = [None] * len(params)
    grads[-2] = [h.T @ dlogit, dlogit.sum(0)]
    grads[-1] = [h.T @ dclog, dclog.sum(0)]
    dh = dlogit @ params[-2][0].T + dclog @ params[-1][0].T
    for i in range(len(params) - 3, -1, -1):
        dz = dh * (acts[i + 1] > 0)
        grads[i] = [acts[i].T @ dz + l2 * params[i][0], dz.sum(0)]
        dh = dz @ params[i][0].T
    return loss, grads


def train(x, y, cls, w, epochs, seed, lr=3e-3, batch=512, class_weight=0.5, l2=1e-5, log=print):
    rng = np.random.default_rng(seed)
    params = init_params(x.shape[1], rng)
    m = [[np.zeros_like(a) for a in p] for p in params]
    v = [[np.zeros_like(a) for a in p] for p in params]
    b1, b2, t = 0.9, 0.999, 0
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        lr_e = lr * (0.5 * (1 + np.cos(np.pi * epoch / epochs)))  # cosine decay
        total = 0.0
        for s in range(0, len(x), batch):
            idx = order[s:s + batch]
            loss, grads = loss_and_grads(params, x[idx], y[idx], cls[idx], w[idx], class_weight, l2)
            total += loss * len(idx)
            t += 1
            for pi, (p, g) in enumerate(zip(params, grads)):
                for k in range(2):
                    m[pi][k] = b1 * m[pi][k] + (1 - b1) * g[k]
                    v[pi][k] = b2 * v[pi][k] + (1 - b2) * g[k] * g[k]
                    mh = m[pi][k] / (1 - b1 ** t)
                    vh = v[pi][k] / (1 - b2 ** t)
                    p[k] -= (lr_e * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
        log(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.5f}")
    return params


# --------------------------------------------------------------------------------------- export
def quantize_weight(w):
    s = float(np.max(np.abs(w))) / 127.0 or 1.0
    q = np.clip(np.round(w / s), -127, 127).astype(np.int8)
    return q, np.float32(s)


def best_scale(a):
    """Per-tensor symmetric int8 scale for activation samples `a`: the clipping point (a
    percentile of |a|) with the smallest mean squared quantization error."""
    a = np.abs(a.ravel())
    if a.size > 400000:
        a = a[np.random.default_rng(0).choice(a.size, 400000, replace=False)]
    best, best_err = None, None
    for pct in (99.0, 99.5, 99.9, 99.95, 99.99, 100.0):
        clip = max(float(np.percentile(a, pct)), 1e-4)
        s = clip / 127.0
        q = np.clip(np.round(a / s), 0, 127) * s
        err = float(np.mean((q - a) ** 2))
        if best_err is None or err < best_err:
            best, best_err = s, err
    return best


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base, array):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array), n))
        return n

    def node(self, op, inputs, base, **attrs):
        out = self.name(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def dense(self, x, w, b):
        """f32 dense layer x · w + b."""
        y = self.node("MatMul", [x, self.const("w", w.astype(np.float32))], "matmul")
        return self.node("Add", [y, self.const("b", b.astype(np.float32))], "add")

    def qdense_heads(self, xq, x_scale, heads):
        """The heads of the int8 model as one product: the int8 input (a ReLU output, zero point
        -128) and each head's int8 weight (own scale) dequantized, concatenated, f32 product and
        bias (the logits stay f32; tract folds the weights' DequantizeLinear and Concat into one
        constant at load). Returns one output per head (Slice of the product's columns)."""
        x = self.node("DequantizeLinear", [xq, self.const("x_scale", np.float32(x_scale)), self.const("x_zero", np.int8(-128))], "dq")
        ws = []
        for w, _ in heads:
            q, s = quantize_weight(w)
            ws.append(self.node("DequantizeLinear", [self.const("w_int8", q), self.const("w_scale", s), self.const("w_zero", np.int8(0))], "w"))
        y = self.node("MatMul", [x, self.node("Concat", ws, "w_heads", axis=1)], "matmul")
        y = self.node("Add", [y, self.const("b", np.concatenate([b for _, b in heads]).astype(np.float32))], "add")
        outs, start = [], 0
        for w, _ in heads:
            end = start + w.shape[1]
            outs.append(self.node("Slice", [y, self.const("start", np.array([start], np.int64)), self.const("end", np.array([end], np.int64)),
                                            self.const("axis", np.array([1], np.int64))], "head"))
            start = end
        return outs


def relu_u8_scale(act_scale):
    """Scale of a ReLU output (255 levels: uint8, or int8 with zero point -128) whose symmetric
    int8 scale is act_scale: the same clipping point (127 · act_scale, from calibration) spread
    over 255 levels. Float64 arithmetic on purpose: relu_act_scale() inverts it exactly once
    rounded to f32 (re-export is byte-identical)."""
    return np.float32(float(act_scale) * 127.0 / 255.0)


def relu_act_scale(u8_scale):
    """Inverse of relu_u8_scale(): the int8-convention activation scale (clip / 127)."""
    return float(u8_scale) * 255.0 / 127.0


def norm_affine(mean, std):
    """(x - mean) / std as x · diag(scale) + shift: (scale, shift)."""
    scale = (1.0 / std).astype(np.float32)
    return scale, (-mean * scale).astype(np.float32)


def build_onnx(params, norm, schema_id, meta, quantize=False, act_scales=None):
    """`norm` is (scale, shift) from norm_affine(). With quantize, the int8 model (see
    build_int8_layers); `act_scales[i]` is the int8 scale (clip / 127) at dense layer i's input."""
    g = Graph()
    scale, shift = norm
    F = len(scale)
    if quantize:
        logit, logits = build_int8_layers(g, norm, params, act_scales)
        g.nodes.append(helper.make_node("Sigmoid", [logit], ["score"], name="score"))
        g.nodes.append(helper.make_node("Identity", [logits], ["class"], name="class"))
    else:
        # The normalization as one affine map, x · diag(scale) + shift: tract runs it, and the
        # Clip after it, inside one matrix-product kernel; broadcast Sub, Div and Clip over [N, F]
        # took longer than the whole network.
        x = g.node("MatMul", ["features", g.const("norm_scale", np.diag(scale))], "scaled")
        x = g.node("Add", [x, g.const("norm_shift", shift)], "shifted")
        # Every feature lands in [-1, 1] on the training data: clip there so one per-tensor int8
        # scale fits every feature, and f32 and int8 agree on values beyond the training range.
        x = g.node("Clip", [x, g.const("clip_lo", np.float32(-CLIP)), g.const("clip_hi", np.float32(CLIP))], "normalized")
        for w, b in params[:-2]:
            x = g.node("Relu", [g.dense(x, w, b)], "relu")
        g.nodes.append(helper.make_node("Sigmoid", [g.dense(x, *params[-2])], ["score"], name="score"))
        # `class` is the class head's logits: the agent only takes the argmax, and a Softmax over
        # 4 columns cost tract as much as the three hidden layers.
        g.nodes.append(helper.make_node("Identity", [g.dense(x, *params[-1])], ["class"], name="class"))
    graph = helper.make_graph(
        g.nodes, "edgewatch",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", F])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1]),
         helper.make_tensor_value_info("class", TensorProto.FLOAT, ["N", len(CLASSES)])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgewatch-train")
    model.ir_version = 8
    full = dict(meta)
    full["edgewatch.feature_schema"] = schema_id
    full["edgewatch.classes"] = ",".join(CLASSES)
    for k, v in full.items():
        e = model.metadata_props.add()
        e.key, e.value = k, str(v)
    onnx.checker.check_model(model)
    return model


def build_int8_layers(g, norm, params, act_scales):
    """The int8 network from `features` to the heads' f32 outputs (score logit, class logits), in
    integer operators, so tract runs int8 × int8 → int32 matrix kernels with the requantization
    fused in, instead of f32 products between QuantizeLinear/DequantizeLinear pairs.

    Every activation is int8 (signed): tract's kernels are int8 × int8, and it put a conversion
    pass (OffsetU8asI8) before every product whose input was uint8, 16 % of the model's time. The
    types are the same at a layer's input and output, as onnxruntime's QLinearConv needs.

    Input: the normalization and its Clip as in the f32 model, on the int8 grid of the first layer's
    input (zero point 0, scale act_scales[0] = CLIP / 127): x · diag(scale / s) + shift / s clipped
    to [-127, 127], then Cast to int8. Cast truncates toward zero (tract and onnxruntime alike), so
    an input lands up to one step from its value, not half a step. Exact rounding costs a pass of
    its own in tract (Round, or QuantizeLinear: a scalar loop), each about as long as the four
    int8 layers together; a uint8 grid, where adding 0.5 before the Cast rounds, is what needed
    the conversion above. Measured on the data, the truncation moves the score about as much as the
    uint8 grid did (docs/history.md, "`mlp-6.1`").

    Every hidden dense layer with its ReLU is one QLinearConv with a 1-wide kernel over [N, C, 1]
    (QLinearConv is the standard ONNX integer operator with an int32 bias): int8 weights (max |w| /
    127), int32 bias at the accumulator's scale, output requantized to int8 with zero point -128, so
    the saturation at -128 (real 0) is the ReLU. A ReLU output's clipping point is the calibrated
    one (127 · act scale), over 255 levels. The heads read the last activations dequantized, with
    int8 weights and f32 logits (Graph.qdense_heads)."""
    scale, shift = norm
    hidden = params[:-2]
    x_scale, x_zero = np.float32(act_scales[0]), np.int8(0)
    s = np.float64(x_scale)
    x = g.node("MatMul", ["features", g.const("norm_scale", np.diag(scale / s).astype(np.float32))], "scaled")
    x = g.node("Add", [x, g.const("norm_shift", (shift / s).astype(np.float32))], "shifted")
    x = g.node("Clip", [x, g.const("clip_lo", np.float32(-127.0)), g.const("clip_hi", np.float32(127.0))], "normalized")
    assert abs(CLIP / s - 127.0) < 1e-3, CLIP / s
    xq = g.node("Cast", [x], "q", to=TensorProto.INT8)
    xq = g.node("Unsqueeze", [xq, g.const("axes", np.array([2], np.int64))], "as_ncw")
    for i, (w, b) in enumerate(hidden):
        q, w_scale = quantize_weight(w)
        y_scale = relu_u8_scale(act_scales[i + 1])
        bias = np.round(b / (np.float64(x_scale) * np.float64(w_scale))).astype(np.int32)
        xq = g.node("QLinearConv", [
            xq, g.const("x_scale", x_scale), g.const("x_zero", x_zero),
            g.const("w_int8", q.T[:, :, None].copy()), g.const("w_scale", w_scale), g.const("w_zero", np.int8(0)),
            g.const("y_scale", y_scale), g.const("y_zero", np.int8(-128)), g.const("b_int32", bias)], "dense_relu")
        x_scale, x_zero = y_scale, np.int8(-128)
    # Both heads read this tensor, calibrated once for each head: the same value.
    assert relu_u8_scale(act_scales[len(hidden)]) == relu_u8_scale(act_scales[len(hidden) + 1]) == x_scale
    xq = g.node("Squeeze", [xq, g.const("axes", np.array([2], np.int64))], "as_nc")
    return g.qdense_heads(xq, x_scale, params[-2:])


def set_meta(model, key, value):
    for e in model.metadata_props:
        if e.key == key:
            e.value = value
            return
    e = model.metadata_props.add()
    e.key, e.value = key, value


def calibrate(model_f32, x_cal):
    """Activation scale at each dense layer's input (the MatMul inputs, in order), with onnxruntime."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model_f32)
    dense_inputs = [n.input[0] for n in m.graph.node if n.op_type == "MatMul" and n.name.startswith("matmul")]
    for name in dense_inputs:
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(dense_inputs, {"features": x_cal})
    return {i: best_scale(o) for i, o in enumerate(outs)}


def run_ort(model, x, batch=65536):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    scores, classes = [], []
    for s in range(0, len(x), batch):
        sc, cl = sess.run(["score", "class"], {"features": x[s:s + batch]})
        scores.append(sc[:, 0])
        classes.append(cl)
    return np.concatenate(scores), np.concatenate(classes)


def pick_threshold(score, y, target_fpr, floor):
    ben = np.sort(score[y == 0])
    if len(ben) == 0:
        return max(0.5, floor)
    k = int(np.floor(len(ben) * (1 - target_fpr)))
    t = float(ben[min(k, len(ben) - 1)]) + 1e-4
    return float(min(max(t, floor), 0.99))


def metrics(score, klass, y, cls, t, attacker=None):
    out = {"benign_rows": int((y == 0).sum()), "fpr_rows": float(((score >= t) & (y == 0)).sum() / max((y == 0).sum(), 1))}
    if attacker is not None:
        ab = (y == 0) & (attacker == 1)
        out["attacker_benign_rows"] = int(ab.sum())
        out["fpr_rows_attacker_benign"] = float(((score >= t) & ab).sum() / max(ab.sum(), 1))
    for c, name in enumerate(CLASSES):
        m = cls == c
        if m.any():
            out[f"recall_{name}"] = float((score[m] >= t).mean())
            out[f"class_acc_{name}"] = float((klass[m].argmax(1) == c).mean())
    return out


def save(model, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return os.path.getsize(path)


def write_golden(path, g, f32, int8):
    """Scores the golden inputs g["inputs"] with both models (onnxruntime) into g, writes it to
    path, and returns the row count."""
    gx = np.array(g["inputs"], np.float32)
    for label, model in (("f32", f32), ("int8", int8)):
        sc, cl = run_ort(model, gx)
        g[label] = {"score": sc.tolist(), "class": cl.tolist()}
    with open(path, "w") as f:
        json.dump(g, f)
    return len(gx)


def read_export(f32_path, int8_path):
    """The parameters of a model exported by this script (any of its graph layouts): dense
    (weight, bias) pairs in order, the normalization (norm_affine), the int8 activation scales,
    metadata."""
    f32, int8 = onnx.load(f32_path), onnx.load(int8_path)
    consts = {i.name: numpy_helper.to_array(i) for i in f32.graph.initializer}
    by_op = lambda m, op: [n for n in m.graph.node if n.op_type == op]
    if any(n.op_type == "Sub" for n in f32.graph.node):  # mlp-2's layout: Sub(mean), Div(std)
        norm = norm_affine(consts[by_op(f32, "Sub")[0].input[1]], consts[by_op(f32, "Div")[0].input[1]])
    else:  # MatMul(diag(scale)), Add(shift)
        norm = (np.diag(consts[next(n for n in f32.graph.node if n.name.startswith("scaled")).input[1]]).copy(),
                consts[next(n for n in f32.graph.node if n.name.startswith("shifted")).input[1]])
    params = []
    for mm in (n for n in f32.graph.node if n.op_type == "MatMul" and n.name.startswith("matmul")):
        add = next(n for n in f32.graph.node if n.op_type == "Add" and n.input[0] == mm.output[0])
        params.append((consts[mm.input[1]], consts[add.input[1]]))
    qconsts = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    convs = by_op(int8, "QLinearConv")
    if convs:  # integer layout: a QLinearConv per hidden layer, dequantized heads
        scales = {0: float(qconsts[convs[0].input[1]])}
        for i, n in enumerate(convs):
            scales[i + 1] = relu_act_scale(qconsts[n.input[6]])
        scales[len(convs) + 1] = scales[len(convs)]
    else:  # QDQ layout: a QuantizeLinear at every dense layer's input
        scales = {i: float(qconsts[n.input[1]]) for i, n in enumerate(by_op(int8, "QuantizeLinear"))}
    meta = {e.key: e.value for e in int8.metadata_props}
    return params, norm, scales, meta


def reexport(args):
    """--reexport DIR (or --reexport F32.onnx INT8.onnx): the model of DIR (edgewatch-f32.onnx +
    edgewatch-int8.onnx, from any version of this script) rebuilt in the current graph layout, weights, scales, threshold and
    metadata unchanged (with --version V, edgewatch.version V / V-int8); with --golden FILE,
    FILE's inputs scored again."""
    if len(args.reexport) == 1:
        paths = [os.path.join(args.reexport[0], n) for n in ("edgewatch-f32.onnx", "edgewatch-int8.onnx")]
    elif len(args.reexport) == 2:
        paths = args.reexport
    else:
        sys.exit("--reexport takes a directory, or the f32 and the int8 model files")
    params, norm, scales, meta = read_export(*paths)
    schema_id = meta.pop("edgewatch.feature_schema")
    meta.pop("edgewatch.classes", None)
    if args.version:  # a new graph layout changes the int8 model's numbers: a new version
        meta["edgewatch.version"] = args.version + "-int8"
    int8 = build_onnx(params, norm, schema_id, meta, quantize=True, act_scales=scales)
    f32 = build_onnx(params, norm, schema_id, dict(meta, **{"edgewatch.version": meta["edgewatch.version"].removesuffix("-int8")}))
    size32 = save(f32, os.path.join(args.out_dir, "edgewatch-f32.onnx"))
    size8 = save(int8, os.path.join(args.out_dir, "edgewatch-int8.onnx"))
    if args.golden:
        with open(args.golden) as f:
            g = json.load(f)
        g["model_version"] = meta["edgewatch.version"]
        n = write_golden(args.golden, g, f32, int8)
        print(f"rescored {args.golden} ({n} rows)")
    print(f"re-exported {meta['edgewatch.version']}: {args.out_dir}/edgewatch-int8.onnx ({size8} bytes), edgewatch-f32.onnx ({size32} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="*", help="labeled CSVs from models/label.py (training runs)")
    ap.add_argument("--reexport", metavar="DIR", nargs="+", help="rebuild DIR's exported model (or the two files F32.onnx INT8.onnx) in the current graph layout instead of training (see reexport())")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--schema", default=os.path.join(HERE, "feature_schema.json"))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--benign-weight", type=float, default=8.0, help="benign total weight / attack total weight (default 8)")
    ap.add_argument("--attacker-benign-weight", type=float, default=1.0,
                    help="weight of a benign row to or from a lab attacker relative to another benign row, within the benign total (default 1; needs label.py's attacker column)")
    ap.add_argument("--public-benign-weight", type=float, default=1.0,
                    help="weight of a benign row of the public captures (label.py --public) relative to a lab benign row, within the benign total (default 1)")
    ap.add_argument("--target-fpr", type=float, default=0.001, help="benign row FPR on training data for the threshold (default 0.001)")
    ap.add_argument("--min-threshold", type=float, default=0.5)
    ap.add_argument("--version", default=None, help="edgewatch.version (default: mlp-<date>)")
    ap.add_argument("--max-per-episode", type=int, default=4000, help="keep at most this many rows of one attack episode (default 4000; 0: all)")
    ap.add_argument("--max-rows", type=int, default=0, help="subsample the training rows to at most this many (0: all)")
    ap.add_argument("--golden", help="write golden vectors (inputs + onnxruntime outputs) here")
    args = ap.parse_args()
    if args.reexport:
        return reexport(args)
    if not args.data:
        ap.error("give the labeled CSVs to train on (or --reexport DIR)")
    t0 = time.time()

    with open(args.schema) as f:
        schema = json.load(f)
    names, x, y, cls, ep, runs, att = load_runs(args.data)
    if args.attacker_benign_weight != 1.0 and not att.any():
        sys.exit("--attacker-benign-weight needs labeled files with the attacker column (re-label with models/label.py)")
    if names != schema["features"]:
        sys.exit("the features in the data are not the frozen schema's (models/feature_schema.json)")
    if args.max_per_episode:
        # Cap the rows of each attack episode (floods make hundreds of thousands of near-identical
        # rows); benign rows are all kept.
        rng0 = np.random.default_rng(args.seed)
        keep = np.ones(len(x), bool)
        keys = np.array([f"{r}/{e}" for r, e in zip(runs, ep)], dtype=object)
        for k in set(keys[y == 1].tolist()):
            idx = np.where(keys == k)[0]
            if len(idx) > args.max_per_episode:
                keep[rng0.choice(idx, len(idx) - args.max_per_episode, replace=False)] = False
        x, y, cls, ep, runs, att = x[keep], y[keep], cls[keep], ep[keep], runs[keep], att[keep]
    if args.max_rows and len(x) > args.max_rows:
        keep = np.sort(np.random.default_rng(args.seed).choice(len(x), args.max_rows, replace=False))
        x, y, cls, ep, runs, att = x[keep], y[keep], cls[keep], ep[keep], runs[keep], att[keep]
    print(f"{len(x)} rows from {len(set(runs))} runs: {int((y == 0).sum())} benign ({int(((y == 0) & (att == 1)).sum())} of attackers), "
          + ", ".join(f"{c} {int((cls == i).sum())}" for i, c in enumerate(CLASSES)))

    # Normalization: centre of the training range and half its width, so every feature spans
    # [-1, 1] (stored as the graph's norm_mean / norm_std); constant features are divided by 1.
    lab = ~public_rows(runs)
    ranged = x[lab] if lab.any() else x
    lo, hi = ranged.min(0), ranged.max(0)
    mean = ((lo + hi) / 2).astype(np.float32)
    std = ((hi - lo) / 2).astype(np.float32)
    std = np.where(std < 1e-6, 1.0, std).astype(np.float32)
    xn = np.clip((x - mean) / std, -CLIP, CLIP).astype(np.float32)
    w = row_weights(y, cls, ep, runs, args.benign_weight, att, args.attacker_benign_weight, args.public_benign_weight)
    params = train(xn, y, cls, w, args.epochs, args.seed, lr=args.lr)

    version = args.version or "mlp-" + datetime.date.today().strftime("%Y%m%d")
    meta = {"edgewatch.threshold": "0.5", "edgewatch.version": version, "edgewatch.name": NAME}
    norm = norm_affine(mean, std)
    f32 = build_onnx(params, norm, schema["schema_id"], meta)
    rng = np.random.default_rng(args.seed + 1)
    cal = x[rng.choice(len(x), min(len(x), 20000), replace=False)]
    # Calibrate on a class-balanced draw as well, so rare attack activations set the ranges too.
    att_idx = np.where(y == 1)[0]
    if len(att_idx):
        cal = np.concatenate([cal, x[rng.choice(att_idx, min(len(att_idx), 5000), replace=False)]])
    scales = calibrate(f32, cal)
    scales[0] = CLIP / 127.0  # the normalized input spans [-CLIP, CLIP] by construction
    int8 = build_onnx(params, norm, schema["schema_id"], dict(meta, **{"edgewatch.version": version + "-int8"}), quantize=True, act_scales=scales)

    s32, c32 = run_ort(f32, x)
    s8, c8 = run_ort(int8, x)
    t = pick_threshold(s8, y, args.target_fpr, args.min_threshold)
    for m in (f32, int8):
        set_meta(m, "edgewatch.threshold", f"{t:.4f}")
    size32 = save(f32, os.path.join(args.out_dir, "edgewatch-f32.onnx"))
    size8 = save(int8, os.path.join(args.out_dir, "edgewatch-int8.onnx"))
    report = {
        "rows": int(len(x)), "runs": sorted(set(runs.tolist())), "epochs": args.epochs, "threshold": t,
        "recipe": {"benign_weight": args.benign_weight, "attacker_benign_weight": args.attacker_benign_weight,
                   "public_benign_weight": args.public_benign_weight,
                   "target_fpr": args.target_fpr, "min_threshold": args.min_threshold, "max_per_episode": args.max_per_episode,
                   "lr": args.lr, "seed": args.seed},
        "version": version, "size_f32": size32, "size_int8": size8,
        "ort_int8_vs_f32_worst_score_gap_train": float(np.max(np.abs(s32 - s8))),
        "ort_int8_vs_f32_mean_score_gap_train": float(np.mean(np.abs(s32 - s8))),
        "train_f32": metrics(s32, c32, y, cls, t, att), "train_int8": metrics(s8, c8, y, cls, t, att),
        "act_scales": {str(k): v for k, v in scales.items()}, "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(args.out_dir, "train-report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: report[k] for k in ("threshold", "size_int8", "ort_int8_vs_f32_worst_score_gap_train", "train_int8")}, indent=1))

    if args.golden:
        # Rows of every kind: benign, each class, and rows near the threshold.
        rng = np.random.default_rng(7)
        pick = list(rng.choice(np.where(y == 0)[0], 8, replace=False))
        for c in range(len(CLASSES)):
            idx = np.where(cls == c)[0]
            if len(idx):
                pick += list(rng.choice(idx, min(4, len(idx)), replace=False))
        near = np.argsort(np.abs(s8 - t))[:8]
        pick += list(near)
        g = {"schema_id": schema["schema_id"], "model_version": version + "-int8", "threshold": t,
             "inputs": x[np.array(pick)].tolist()}
        n = write_golden(args.golden, g, f32, int8)
        print(f"wrote {args.golden} ({n} rows)")
    print(f"wrote {args.out_dir}/edgewatch-int8.onnx ({size8} bytes) and edgewatch-f32.onnx ({size32} bytes) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
