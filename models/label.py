#!/usr/bin/env python3
"""Labels edgewatch feature rows with the attack episodes of a lab run.

A row (one flow evaluation from `edgewatch features`) is malicious when its source or destination
is one of the episode's attacker addresses (`attacker_ips`, IPv4 and IPv6) and the flow's span
[start, end] overlaps the episode window [start, end + grace] (grace defaults to 1 s: the last
replies and FIN/RST arrive just after the tool exits, and the lab keeps attackers quiet 2-5 s after
an episode). Its class is the episode's class. Every other row is benign (including the attackers'
own ordinary requests outside their windows). Runs are kept apart: every labeled row carries its
run name, so training and testing split by run, never by row. Every row also says whether one of its
endpoints is any attacker of the run (`attacker` 1/0, whatever the label): the benign rows with
attacker = 1 are the attackers' ordinary traffic around their attacks, the hardest negatives
(train.py --attacker-benign-weight). Files labeled before this column existed still load (the
column is then absent).

Usage:
  python3 models/label.py LAB_DIR [LAB_DIR ...] --out-dir DATA [--binary PATH]
      runs `edgewatch features LAB_DIR/capture.pcap` (cached as LAB_DIR/features.csv) and writes
      DATA/<run>.csv.gz (feature CSV + columns run,label,class,episode,attacker) for each lab run.
      With --isolated, also DATA/<run>-isolated.csv.gz: the rows of each episode replayed alone
      (only its attacker's packets, split_episodes) and of each benign client alone
      (benign_hosts), so the model learns attacks on a victim that serves no one else, not
      only on the lab's busy server, and that a quiet server's one client is no attacker.
  python3 models/label.py --features FEATURES.csv --attacks ATTACKS.json -o OUT.csv.gz
  python3 models/label.py --public CORPUS --labels models/public/labels.csv --out-dir DATA
      the benign captures of the public training sources (evaluate.TRAINING_SOURCES, fetched into
      CORPUS/<owner>+<repo>/ as bench/README.md says, "Captures in the wild") as benign rows, one DATA/public-<repo>.csv.gz
      per source (run public-<repo>, attacker 0). Captures that labels.csv marks attack or exclude
      are left out, and so are those the agent cannot read.
  python3 models/label.py --sample OUT.csv.gz [--sample-rows 4000] DATA/a.csv.gz DATA/b.csv.gz ...
      a small class-balanced sample of labeled files (models/data/sample.csv.gz for CI).
Library: load_features(csv), load_attacks(json), label_rows(meta, episodes) -> (label, class, episode),
attacker_rows(meta, episodes) -> 0/1 per row, split_episodes(capture, episodes, dir) -> {id: pcap}, split_views, benign_hosts.
Needs: numpy (models/requirements.txt).
"""

import argparse
import concurrent.futures
import csv
import gzip
import ipaddress
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLASSES = ["scan", "flood", "bruteforce", "slowdos"]
META_COLUMNS = ["flow_uid", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "vlan", "start", "end", "eval_ts", "eval_reason"]
LABEL_COLUMNS = ["run", "label", "class", "episode", "attacker"]


def find_binary(explicit=None):
    """The edgewatch binary: --binary, $EDGEWATCH, then the newest of target/{release,debug}."""
    if explicit:
        return explicit
    if os.environ.get("EDGEWATCH"):
        return os.environ["EDGEWATCH"]
    found = [os.path.join(ROOT, "target", p, "edgewatch") for p in ("release", "debug")]
    found = [p for p in found if os.path.exists(p)]
    if not found:
        sys.exit("no edgewatch binary: build it (cargo build --release) or pass --binary / set $EDGEWATCH")
    return max(found, key=os.path.getmtime)


def run_features(binary, capture, out_csv):
    subprocess.run([binary, "features", capture, "-o", out_csv], check=True, stdout=subprocess.DEVNULL)
    return out_csv


def norm_ip(s):
    try:
        return str(ipaddress.ip_address(s.strip("[]")))
    except ValueError:
        return s


def open_text(path):
    return gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, newline="")


def load_features(path):
    """Reads a features CSV (plain or .gz). Returns (header, meta rows as dicts, X float32 [N, F],
    extra columns dict) where extra holds any columns after the features (e.g. labels)."""
    with open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    feat_names = [h for h in header[len(META_COLUMNS):] if h not in LABEL_COLUMNS]
    n_meta, n_feat = len(META_COLUMNS), len(feat_names)
    meta = {c: [r[i] for r in rows] for i, c in enumerate(META_COLUMNS)}
    x = np.array([r[n_meta:n_meta + n_feat] for r in rows], dtype=np.float32).reshape(len(rows), n_feat)
    extra = {"_raw": [r[n_meta:n_meta + n_feat] for r in rows]}
    for i, h in enumerate(header):
        if h in LABEL_COLUMNS:
            extra[h] = [r[i] for r in rows]
    return header[:n_meta + n_feat], feat_names, meta, x, extra


def load_attacks(path):
    with open(path) as f:
        episodes = json.load(f)
    for e in episodes:
        ips = set(e.get("attacker_ips") or []) | {e["attacker"]}
        e["_ips"] = {norm_ip(i) for i in ips}
    return episodes


def label_rows(meta, episodes, grace=1.0):
    """Per row: label (0/1), class name ('' when benign) and episode id (-1 when benign)."""
    n = len(meta["start"])
    src = [norm_ip(s) for s in meta["src_ip"]]
    dst = [norm_ip(s) for s in meta["dest_ip"]]
    start = np.array(meta["start"], dtype=np.float64)
    end = np.array(meta["end"], dtype=np.float64)
    label = np.zeros(n, np.int8)
    cls = np.array([""] * n, dtype=object)
    episode = np.full(n, -1, np.int32)
    for e in episodes:
        ips = e["_ips"]
        involved = np.array([s in ips or d in ips for s, d in zip(src, dst)], dtype=bool)
        overlap = (start <= e["end"] + grace) & (end >= e["start"])
        hit = involved & overlap & (label == 0)
        label[hit] = 1
        cls[hit] = e["class"]
        episode[hit] = e["id"]
    return label, cls, episode


def attacker_rows(meta, episodes):
    """Per row: 1 when its source or destination is an address of any attacker of the run (any
    episode, any time), else 0."""
    ips = set().union(*(e["_ips"] for e in episodes)) if episodes else set()
    return np.array([int(norm_ip(s) in ips or norm_ip(d) in ips) for s, d in zip(meta["src_ip"], meta["dest_ip"])], np.int8)


def split_views(capture, views, out_dir):
    """Writes OUT_DIR/<name>.pcap for each view (name, addresses, from, to): the packets of a
    classic Ethernet pcap (the lab's) to or from one of the addresses within [from, to], in one
    pass (lab/check_capture.read_pcap). Returns {name: path}."""
    sys.path.insert(0, os.path.join(HERE, "lab"))
    from check_capture import read_pcap
    with open(capture, "rb") as f:
        head = f.read(24)
    os.makedirs(out_dir, exist_ok=True)
    outs = []
    try:
        for name, ips, lo, hi in views:
            path = os.path.join(out_dir, f"{name}.pcap")
            out = open(path, "wb")
            out.write(head)
            outs.append((name, path, out, set(ips), lo, hi))
        for ts, src, dst, _, record in read_pcap(capture, raw=True):
            for _, _, out, wanted, lo, hi in outs:
                if lo <= ts <= hi and (src in wanted or dst in wanted):
                    out.write(record)
    except ValueError as e:
        sys.exit(str(e))
    finally:
        for _, _, out, *_ in outs:
            out.close()
    return {name: path for name, path, *_ in outs}


def episode_views(episodes, before=2.0, after=30.0):
    """`split_views` views of each episode alone: its attacker's addresses from `before` seconds
    before its start to `after` seconds after its end, the attack as a sensor sees it when
    nothing else crosses the network (its victim serves no one else, no other attack goes on)."""
    return [(f"episode-{e['id']}", e["_ips"], e["start"] - before, e["end"] + after) for e in episodes]


def split_episodes(capture, episodes, out_dir):
    """Writes OUT_DIR/episode-<id>.pcap for each episode alone (`episode_views`). Returns
    {episode id: path}."""
    paths = split_views(capture, episode_views(episodes), out_dir)
    return {e["id"]: paths[f"episode-{e['id']}"] for e in episodes}


def benign_hosts(meta, episodes, min_rows=20):
    """The addresses that start flows in a run and are neither an attacker's nor a victim's, with
    at least `min_rows` feature rows: the lab's benign clients (and its router)."""
    shunned = set().union(*(e["_ips"] for e in episodes)) if episodes else set()
    shunned |= {norm_ip(e["victim"]) for e in episodes}
    shunned |= {norm_ip(v) for e in episodes for v in e.get("victim_ips", [])}
    counts = {}
    for src in meta["src_ip"]:
        src = norm_ip(src)
        if src not in shunned:
            counts[src] = counts.get(src, 0) + 1
    return sorted(ip for ip, n in counts.items() if n >= min_rows)


def label_isolated(lab, out_path, binary, grace, full, episodes):
    """Writes the labeled rows of each of the run's episodes alone (`episode_views`) and of each
    benign client alone (all its packets, `benign_hosts` of the whole run's rows `full`), as run
    `<run>-isolated`: attacks the model must flag when their victim is otherwise quiet, and
    ordinary clients it must not flag when their server is."""
    run = os.path.basename(os.path.normpath(lab)) + "-isolated"
    clients = benign_hosts(full, episodes)
    views = episode_views(episodes)
    views += [(f"host-{i}", [ip], float("-inf"), float("inf")) for i, ip in enumerate(clients)]
    header, metas, raws = None, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for pcap in split_views(os.path.join(lab, "capture.pcap"), views, tmp).values():
            feats = run_features(binary, pcap, pcap[:-len(".pcap")] + ".csv")
            h, _, meta, _, extra = load_features(feats)
            if header is not None and h != header:
                sys.exit(f"{pcap}: feature columns differ")
            header = h
            metas.append(meta)
            raws.extend(extra["_raw"])
    meta = {c: [v for m in metas for v in m[c]] for c in META_COLUMNS}
    label, cls, episode = label_rows(meta, episodes, grace)
    attacker = attacker_rows(meta, episodes)
    write_labeled(out_path, header, meta, raws, run, label, cls, episode, attacker)
    print(summary(run, label, cls, episode, attacker), f"({len(clients)} benign hosts) ->", out_path)


def write_labeled(path, header, meta, raw, run, label, cls, episode, attacker):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(header + LABEL_COLUMNS)
        for i in range(len(label)):
            w.writerow([meta[c][i] for c in META_COLUMNS] + raw[i] + [run, int(label[i]), cls[i], int(episode[i]), int(attacker[i])])


def summary(run, label, cls, episode, attacker):
    parts = [f"{run}: {len(label)} rows, {int((label == 0).sum())} benign ({int(((label == 0) & (attacker == 1)).sum())} of attackers)"]
    for c in CLASSES:
        k = int((cls == c).sum())
        eps = len(set(episode[cls == c].tolist()))
        parts.append(f"{c} {k} ({eps} ep)")
    return ", ".join(parts)


def label_public(corpus, labels_csv, out_dir, binary, jobs):
    """Writes DATA/public-<repo>.csv.gz: every feature row of the training sources' benign
    captures, labeled benign."""
    sys.path.insert(0, HERE)
    from evaluate import TRAINING_SOURCES, load_labels
    labels = load_labels(labels_csv)

    def features(full):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "f.csv")
            p = subprocess.run([binary, "features", full, "-o", out], capture_output=True, text=True)
            if p.returncode != 0:
                return None
            with open(out, newline="") as f:
                reader = csv.reader(f)
                return next(reader), list(reader)

    for repo in TRAINING_SOURCES:
        base = os.path.join(corpus, repo)
        if not os.path.isdir(base):
            sys.exit(f"{base}: missing (bench/README.md, \"Captures in the wild\", says how to fetch it)")
        files, left_out = [], 0
        for dirpath, _, names in os.walk(base):
            for n in sorted(names):
                full = os.path.join(dirpath, n)
                # Listed captures are attacks, left out, or benign said explicitly.
                if any(r["role"] != "benign" for r in labels.get(f"{repo}/{os.path.relpath(full, base)}", [])):
                    left_out += 1
                    continue
                files.append(full)
        header, rows, unreadable = None, [], 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            for got in pool.map(features, sorted(files)):
                if got is None:
                    unreadable += 1
                    continue
                header = header or got[0]
                if got[0] != header:
                    sys.exit(f"{repo}: feature columns differ between captures")
                rows.extend(got[1])
        if header is None:
            sys.exit(f"{repo}: no capture could be read")
        out = os.path.join(out_dir, f"public-{repo}.csv.gz")
        os.makedirs(out_dir, exist_ok=True)
        with gzip.open(out, "wt", newline="") as f:
            w = csv.writer(f)
            w.writerow(header + LABEL_COLUMNS)
            for r in rows:
                w.writerow(r + [f"public-{repo}", 0, "", -1, 0])
        print(f"public-{repo}: {len(rows)} benign rows from {len(files) - unreadable} captures "
              f"({left_out} attack/excluded left out, {unreadable} unreadable) -> {out}")


def make_sample(inputs, out, rows, seed=1):
    """Up to rows/5 rows of each of benign and the four classes, drawn evenly from the inputs."""
    rng = np.random.default_rng(seed)
    header, picked = None, {k: [] for k in ["benign"] + CLASSES}
    for path in inputs:
        with open_text(path) as f:
            reader = csv.reader(f)
            h = next(reader)
            header = header or h
            if h != header:
                sys.exit(f"{path}: columns differ from the first file (label every run with the same label.py)")
            ci = h.index("class")
            for r in reader:
                picked[r[ci] or "benign"].append(r)
    per = rows // len(picked)
    with gzip.open(out, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for k, rs in picked.items():
            for i in sorted(rng.choice(len(rs), min(per, len(rs)), replace=False)) if rs else []:
                w.writerow(rs[i])
            print(f"{k}: {min(per, len(rs))} of {len(rs)} rows")
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("labs", nargs="*", help="lab run directories (capture.pcap + attacks.json)")
    ap.add_argument("--out-dir", help="where <run>.csv.gz go")
    ap.add_argument("--binary", help="edgewatch binary (default: $EDGEWATCH or target/*/edgewatch)")
    ap.add_argument("--features", help="an existing features CSV (with --attacks and -o)")
    ap.add_argument("--attacks", help="attacks.json for --features")
    ap.add_argument("-o", "--out", help="output for --features")
    ap.add_argument("--grace", type=float, default=1.0, help="seconds after an episode's end still counted (default 1)")
    ap.add_argument("--sample", help="write a class-balanced sample of the labeled CSVs given as arguments here")
    ap.add_argument("--sample-rows", type=int, default=4000)
    ap.add_argument("--refresh", action="store_true", help="recompute features even when LAB_DIR/features.csv exists")
    ap.add_argument("--public", metavar="CORPUS", help="label the public training sources' benign captures under CORPUS (with --labels, --out-dir)")
    ap.add_argument("--labels", help="models/public/labels.csv, for --public")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="captures read at once with --public")
    ap.add_argument("--isolated", action="store_true", help="also write DATA/<run>-isolated.csv.gz: the rows of each episode with only its attacker's packets and of each benign client with only its own (split_episodes, benign_hosts)")
    args = ap.parse_args()
    if args.public:
        if not (args.labels and args.out_dir):
            ap.error("--public needs --labels and --out-dir")
        label_public(args.public, args.labels, args.out_dir, find_binary(args.binary), args.jobs)
        return

    if args.sample:
        make_sample(args.labs, args.sample, args.sample_rows)
        return
    jobs = []
    if args.features:
        if not (args.attacks and args.out):
            ap.error("--features needs --attacks and -o")
        jobs.append((os.path.basename(args.features).split(".")[0], args.features, args.attacks, args.out, None))
    for lab in args.labs:
        if not args.out_dir:
            ap.error("LAB_DIR needs --out-dir")
        run = os.path.basename(os.path.normpath(lab))
        feats = os.path.join(lab, "features.csv")
        cap = os.path.join(lab, "capture.pcap")
        if args.refresh or not os.path.exists(feats) or os.path.getmtime(feats) < os.path.getmtime(cap):
            run_features(find_binary(args.binary), cap, feats)
        jobs.append((run, feats, os.path.join(lab, "attacks.json"), os.path.join(args.out_dir, f"{run}.csv.gz"), lab))
    if not jobs:
        ap.error("nothing to label")
    for run, feats, attacks, out, lab in jobs:
        header, _, meta, _, extra = load_features(feats)
        episodes = load_attacks(attacks)
        label, cls, episode = label_rows(meta, episodes, args.grace)
        attacker = attacker_rows(meta, episodes)
        write_labeled(out, header, meta, extra["_raw"], run, label, cls, episode, attacker)
        print(summary(run, label, cls, episode, attacker), "->", out)
        if args.isolated and lab:
            label_isolated(lab, os.path.join(args.out_dir, f"{run}-isolated.csv.gz"),
                           find_binary(args.binary), args.grace, meta, episodes)


if __name__ == "__main__":
    main()
