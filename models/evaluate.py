#!/usr/bin/env python3
"""Evaluates a model on a labeled capture: replays it through `edgewatch replay` and scores the
alerts against the flows of `edgewatch features`, labeled with the attack episodes.

Flows: the rows of `edgewatch features` grouped by flow_uid (span = earliest start .. latest end),
labeled as in models/label.py (an endpoint is the episode's attacker and the span overlaps the
episode window + 1 s grace). An alert covers a flow when the protocol matches, the endpoints match
(either direction; an alert without ports covers every port between the two hosts) and the alert's
timestamp lies within the flow's span +-1 s.

Per attack class: episodes detected (>= 1 covered flow), flow recall, time from episode start to the
first alert covering one of its flows (median and worst over detected episodes), and the share of
those alerts whose class (signature) is the episode's class. Benign: benign flows alerted / benign
flows (FPR), the same for the attackers' own benign flows (an endpoint is an attacker of the run),
and the alerted benign flows (start_s: seconds after the run's first episode); precision = covered
attack flows / all covered flows, and alerts covering at least one attack flow / all alerts.

Usage: python3 models/evaluate.py CAPTURE ATTACKS_JSON [--model FILE] [--binary PATH] [--json OUT]
Needs: numpy (models/requirements.txt) and an edgewatch binary ($EDGEWATCH or target/*/edgewatch).
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import label as lab_label  # noqa: E402

CLASSES = lab_label.CLASSES
SLACK = 1.0


def ts_of(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def flows_of(features_csv, episodes):
    _, _, meta, _, _ = lab_label.load_features(features_csv)
    by_uid = {}
    for i, uid in enumerate(meta["flow_uid"]):
        s, e = float(meta["start"][i]), float(meta["end"][i])
        f = by_uid.get(uid)
        if f is None:
            by_uid[uid] = [meta["src_ip"][i], meta["src_port"][i], meta["dest_ip"][i], meta["dest_port"][i], meta["proto"][i], s, e]
        else:
            f[5], f[6] = min(f[5], s), max(f[6], e)
    rows = list(by_uid.values())
    fm = {
        "src_ip": [lab_label.norm_ip(r[0]) for r in rows], "src_port": [r[1] for r in rows],
        "dest_ip": [lab_label.norm_ip(r[2]) for r in rows], "dest_port": [r[3] for r in rows],
        "proto": [r[4] for r in rows], "start": [r[5] for r in rows], "end": [r[6] for r in rows],
    }
    label, cls, episode = lab_label.label_rows(fm, episodes)
    return fm, label, cls, episode


def port(p):
    try:
        return int(p)
    except (TypeError, ValueError):
        return -1


def coverage(fm, alerts):
    """covered[i] = True when an alert covers flow i; first[i] = earliest covering alert time;
    alert_hits[j] = indices of the flows alert j covers."""
    n = len(fm["start"])
    groups = defaultdict(list)
    for i in range(n):
        key = (fm["proto"][i], frozenset((fm["src_ip"][i], fm["dest_ip"][i])))
        groups[key].append(i)
    garr = {}
    for key, idx in groups.items():
        idx = np.array(idx)
        garr[key] = (
            idx,
            np.array([fm["start"][i] for i in idx]), np.array([fm["end"][i] for i in idx]),
            np.array([fm["src_ip"][i] for i in idx], dtype=object),
            np.array([port(fm["src_port"][i]) for i in idx]), np.array([port(fm["dest_port"][i]) for i in idx]),
        )
    covered = np.zeros(n, bool)
    first = np.full(n, np.inf)
    alert_hits = []
    for a in alerts:
        src, dst = lab_label.norm_ip(a["src_ip"]), lab_label.norm_ip(a["dest_ip"])
        key = (a["proto"], frozenset((src, dst)))
        if key not in garr:
            alert_hits.append(np.array([], int))
            continue
        idx, st, en, fsrc, sp, dp = garr[key]
        t = a["_ts"]
        m = (st - SLACK <= t) & (t <= en + SLACK)
        if "src_port" in a or "dest_port" in a:
            same = fsrc == src
            asp, adp = a.get("src_port"), a.get("dest_port")
            fwd = same & ((asp is None) | (sp == (asp if asp is not None else -2))) & ((adp is None) | (dp == (adp if adp is not None else -2)))
            rev = ~same & ((asp is None) | (dp == (asp if asp is not None else -2))) & ((adp is None) | (sp == (adp if adp is not None else -2)))
            m &= fwd | rev
        hit = idx[m]
        covered[hit] = True
        first[hit] = np.minimum(first[hit], t)
        alert_hits.append(hit)
    return covered, first, alert_hits


def alert_class(a):
    sig = a.get("alert", {}).get("signature", "")
    return sig.rsplit(":", 1)[-1].strip() if ":" in sig else ""


def evaluate(capture, attacks_path, model=None, binary=None, workdir=None, features_csv=None, config=None):
    binary = lab_label.find_binary(binary)
    episodes = lab_label.load_attacks(attacks_path)
    work = workdir or tempfile.mkdtemp(prefix="ew-eval-")
    if not features_csv:
        features_csv = os.path.join(work, "features.csv")
        subprocess.run([binary, "features", capture, "-o", features_csv] + (["--config", config] if config else []),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    alerts_path = os.path.join(work, "alerts.jsonl")
    cmd = [binary, "replay", capture, "--alerts", alerts_path]
    if model:
        cmd += ["--model", model]
    if config:
        cmd += ["--config", config]
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    summary_line = [l for l in r.stderr.splitlines() if l.strip()][-1:] or [""]
    alerts = []
    with open(alerts_path) as f:
        for line in f:
            if line.strip():
                a = json.loads(line)
                a["_ts"] = ts_of(a["timestamp"])
                alerts.append(a)
    fm, label, cls, episode = flows_of(features_csv, episodes)
    covered, first, alert_hits = coverage(fm, alerts)

    out = {"capture": capture, "model": model or "embedded", "flows": int(len(label)), "alerts": len(alerts),
           "replay_summary": summary_line[0], "classes": {}, "episodes": []}
    first_alert_of_ep = {}
    class_ok_of_ep = {}
    for j, a in enumerate(alerts):
        eps = set(episode[alert_hits[j]].tolist()) - {-1}
        for e in eps:
            if a["_ts"] < first_alert_of_ep.get(e, np.inf):
                first_alert_of_ep[e] = a["_ts"]
            class_ok_of_ep.setdefault(e, []).append(alert_class(a))
    for e in episodes:
        m = episode == e["id"]
        det = bool(covered[m].any())
        delay = first_alert_of_ep.get(e["id"], np.inf) - e["start"] if det else None
        oks = class_ok_of_ep.get(e["id"], [])
        out["episodes"].append({
            "id": e["id"], "class": e["class"], "attack": e.get("attack", e.get("tool")), "flows": int(m.sum()),
            "covered": int(covered[m].sum()), "detected": det, "first_alert_s": None if delay is None else round(float(delay), 3),
            "alert_class_ok": round(sum(c == e["class"] for c in oks) / len(oks), 3) if oks else None,
        })
    for c in CLASSES:
        eps = [x for x in out["episodes"] if x["class"] == c]
        m = cls == c
        delays = [x["first_alert_s"] for x in eps if x["first_alert_s"] is not None]
        oks = [x["alert_class_ok"] for x in eps if x["alert_class_ok"] is not None]
        out["classes"][c] = {
            "episodes": len(eps), "detected": sum(x["detected"] for x in eps),
            "flows": int(m.sum()), "covered": int(covered[m].sum()),
            "recall": float(covered[m].mean()) if m.any() else None,
            "first_alert_median_s": float(np.median(delays)) if delays else None,
            "first_alert_max_s": float(np.max(delays)) if delays else None,
            "alert_class_ok": float(np.mean(oks)) if oks else None,
        }
    ben = label == 0
    att_cov = int((covered & ~ben).sum())
    ben_cov = int((covered & ben).sum())
    out["benign"] = {"flows": int(ben.sum()), "alerted": ben_cov, "fpr": float(ben_cov / max(ben.sum(), 1))}
    # The attackers' own benign flows (an endpoint is an attacker of the run): the hard negatives.
    att_ben = ben & (lab_label.attacker_rows(fm, episodes) == 1)
    out["benign"]["attacker_flows"] = int(att_ben.sum())
    out["benign"]["attacker_alerted"] = int((covered & att_ben).sum())
    t0 = min((e["start"] for e in episodes), default=0.0)
    out["benign"]["alerted_flows"] = [
        {"src_ip": fm["src_ip"][i], "src_port": fm["src_port"][i], "dest_ip": fm["dest_ip"][i], "dest_port": fm["dest_port"][i],
         "proto": fm["proto"][i], "start_s": round(fm["start"][i] - t0, 2), "attacker": bool(att_ben[i])}
        for i in np.where(covered & ben)[0][:100]]
    out["precision_flows"] = float(att_cov / max(att_cov + ben_cov, 1))
    useful = sum(1 for h in alert_hits if len(h) and (label[h] == 1).any())
    out["precision_alerts"] = float(useful / max(len(alerts), 1))
    out["alerts_covering_nothing"] = sum(1 for h in alert_hits if len(h) == 0)
    all_eps = out["episodes"]
    delays = [x["first_alert_s"] for x in all_eps if x["first_alert_s"] is not None]
    rec = [v["recall"] for v in out["classes"].values() if v["recall"] is not None]
    out["targets"] = {
        "every_episode_detected": all(x["detected"] for x in all_eps),
        "recall_ge_0.9_every_class": bool(rec) and min(rec) >= 0.9,
        "benign_fpr_le_1pct": out["benign"]["fpr"] <= 0.01,
        "first_alert_within_2s": bool(delays) and len(delays) == len(all_eps) and max(delays) <= 2.0,
    }
    return out


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(res):
    lines = [f"model: {res['model']}   flows: {res['flows']}   alerts: {res['alerts']}",
             f"{'class':<11} {'episodes':>9} {'flows':>7} {'recall':>7} {'1st alert median/max s':>23} {'class ok':>9}"]
    for c, v in res["classes"].items():
        lines.append(f"{c:<11} {v['detected']:>4}/{v['episodes']:<4} {v['flows']:>7} {fmt(v['recall'], '.3f'):>7} "
                     f"{fmt(v['first_alert_median_s'], '.2f'):>11}/{fmt(v['first_alert_max_s'], '.2f'):<11} {fmt(v['alert_class_ok'], '.2f'):>9}")
    b = res["benign"]
    lines.append(f"benign: {b['alerted']}/{b['flows']} flows alerted, FPR {b['fpr']:.4f}; "
                 f"precision {res['precision_flows']:.3f} (flows), {res['precision_alerts']:.3f} (alerts)")
    if "attacker_flows" in b:
        lines.append(f"benign flows of the attackers: {b['attacker_alerted']}/{b['attacker_flows']} alerted")
    lines.append("episodes: " + "; ".join(
        f"{e['id']} {e['attack']} {e['covered']}/{e['flows']} {fmt(e['first_alert_s'], '.2f')}s" for e in res["episodes"]))
    lines.append("targets: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in res["targets"].items()))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("capture")
    ap.add_argument("attacks")
    ap.add_argument("--model", help="ONNX model (default: the binary's embedded model)")
    ap.add_argument("--binary", help="edgewatch binary (default: $EDGEWATCH or target/*/edgewatch)")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--config", help="edgewatch config file for replay and features")
    ap.add_argument("--features", help="reuse an existing `edgewatch features` CSV of this capture")
    args = ap.parse_args()
    res = evaluate(args.capture, args.attacks, args.model, args.binary, features_csv=args.features, config=args.config)
    print(table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
