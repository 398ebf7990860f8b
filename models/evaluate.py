#!/usr/bin/env python3
"""Evaluates edgewatch's alerts, per source of captures, the way an operator would judge them.

An alert (one `alert_id`, whatever its updates) TELLS of an attack episode when its class is the
episode's, it names the episode's attacker (src_ip, alert.source or a flood's top_sources) or, for
a flood or slow DoS from many sources, the episode's victim, its destination (if it has one) is
one of the episode's victims, its protocol is the one the episode's tool sends (lab runs: an ICMP
flood's alert does not tell of the same host's DNS flood), and one of its records (the alert or
an update) is raised during the episode ([start - 1 s, end + 5 s]; a public capture's episode
spans the whole capture) with evidence from it (the record's last_seen at start - 1 s or
later: the closing record of an incident that went quiet before the episode tells of nothing in
it). The alert whose record comes first detects the episode, at that record's time; it is TRUE.
An incident that goes on over two attacks of one attacker tells of both with its updates. Every other alert is false: a DUPLICATE (it tells of an episode another alert
told of first), one that names no episode, or one with the wrong class. (Until 2026-12-06 an
alert counted for at most one episode, the first one its [first_seen, last_seen] overlapped, and
a second episode told of by the same incident's updates counted as missed. Until 2026-12-06
evening a closing record counted whatever its last_seen, so an incident closed during another
episode of its attacker told of that episode; until that night an alert told of an episode
whatever its victim and protocol.)

Per source (a lab setting, or a repository of public captures):
  flows              flows in the source's captures (edgewatch's count)
  benign_flows       flows of the captures that hold no attack, plus, in lab runs, the flows
                     that do not involve an attacker during its episode (labelled by label.py)
  alerts             distinct alerts
  false_per_1k       false alerts per 1,000 benign flows
  benign_fpr         flows covered by false alerts that name no attacker of the source /
                     benign flows (lab runs); false alerts naming an attacker (a second class of
                     its attack, or its attack alerted late) cover its attack's flows, which
                     `false_flows` counts with the rest
  episodes, detected recall of episodes with the right class
  precision          true alerts / all alerts (duplicates and wrong classes count against it)
  innocents_named    alerts, true or false, that name a host other than an attacker (src_ip or
                     a top source) in a capture whose attackers are all known (lab runs, public
                     attack captures): a flood alert true to its episode can still name a
                     client of its victim
  first_alert_s      median and worst delay from episode start to the raising of its first true
                     alert (lab)
  first_alert_wire_s the same from the episode's first packet on the wire (lab: the earliest
                     start of a flow from an attacker to a victim in the episode; the tool's own
                     start-up, a process the sensor cannot see, left out); `first_alerts`
                     lists both delays of every detected episode

Usage:
  python3 models/evaluate.py [lab] CAPTURE ATTACKS_JSON [--name SETTING] [--json OUT]
  python3 models/evaluate.py isolated CAPTURE ATTACKS_JSON [--name SETTING] [--json OUT]
      each episode of a lab run replayed alone (`isolated`): its attacker's packets only, as on a
      network where its victim serves no one else; recall, first alerts, and false alerts
  python3 models/evaluate.py public DIR --labels models/public/labels.csv [--role eval|train|all]
      [--json OUT] [--jobs N]
      DIR holds the corpus as <owner>+<repo>/<path> (bench/README.md, "Captures in the wild");
      labels.csv names every capture that holds an attack, and which captures are left out.
  python3 models/evaluate.py table RESULT.json [RESULT.json ...]
  common options: --model FILE --config FILE --binary PATH (default: $EDGEWATCH or target/*/edgewatch)
Standard library only (the lab and isolated modes use label.py, which needs numpy).
"""

import argparse
import concurrent.futures
import csv
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GRACE_BEFORE = 1.0
GRACE_AFTER = 5.0
SUMMARY = re.compile(r"^replay: (\d+) packets, (\d+) flows, (\d+) alerts", re.M)


def find_binary(explicit=None):
    if explicit:
        return explicit
    if os.environ.get("EDGEWATCH"):
        return os.environ["EDGEWATCH"]
    found = [os.path.join(ROOT, "target", p, "edgewatch") for p in ("release", "debug")]
    found = [p for p in found if os.path.exists(p)]
    if not found:
        sys.exit("no edgewatch binary: build it (cargo build --release) or pass --binary")
    return max(found, key=os.path.getmtime)


def ts_of(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def replay(binary, capture, model=None, config=None, timeout=600):
    """Runs `edgewatch replay`; returns (flows, alerts as {alert_id: last record}, error)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "alerts.jsonl")
        cmd = [binary, "replay", capture, "--alerts", out, "--workers", "1"]
        if model:
            cmd += ["--model", model]
        if config:
            cmd += ["--config", config]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return 0, {}, "timeout"
        m = SUMMARY.search(p.stderr)
        if p.returncode != 0 or not m:
            return 0, {}, (p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1]
        alerts = {}
        if os.path.exists(out):
            for line in open(out):
                a = json.loads(line)
                d = a["alert"]["context"]["edgewatch"]
                # Records come in order: the last one stays, with the times of all of them
                # (the alert itself, then its updates), each with its evidence's last flow.
                a["times"] = alerts[d["alert_id"]]["times"] if d["alert_id"] in alerts else []
                a["times"].append((ts_of(a["timestamp"]), ts_of(d["last_seen"])))
                alerts[d["alert_id"]] = a
        return int(m.group(2)), alerts, None


def detail(a):
    return a["alert"]["context"]["edgewatch"]


def named(a):
    """The hosts an alert names as attackers."""
    hosts = {a.get("src_ip")} | {s["ip"] for s in detail(a)["evidence"].get("top_sources", [])}
    return hosts - {None}


def names_episode(a, ep):
    """Whether alert `a` names episode `ep`'s attacker or victim (class and time aside), and
    its victim if the alert has one (an alert about the attacker's IPv4 address does not tell
    of its attack on the victim's IPv6 address), in the episode's protocol if it has one."""
    victims = set(ep["victims"])
    if "*" not in victims and a.get("dest_ip") is not None and a["dest_ip"] not in victims:
        return False
    if ep.get("protos") and a.get("proto") not in ep["protos"]:
        return False
    attackers = set(ep["attackers"])
    if "*" in attackers:
        names = a.get("dest_ip") in ep["victims"]
    else:
        names = bool(named(a) & attackers) or (
            detail(a)["class"] in ("flood", "slowdos") and "src_ip" not in a
            and a.get("dest_ip") in ep["victims"])
    return names


def told(a, ep):
    """When alert `a` first told of episode `ep` (None: it did not): its first record raised
    during the episode with evidence from it (its last flow seen then: the closing record of an
    incident that ended before the episode tells of nothing in it), or for a public capture (no
    start) its first record."""
    if detail(a)["class"] != ep["class"] or not names_episode(a, ep):
        return None
    if ep.get("start") is None:
        return a["times"][0][0]
    lo, hi = ep["start"] - GRACE_BEFORE, ep["end"] + GRACE_AFTER
    return next((t for t, last in a["times"] if lo <= t <= hi and last >= lo), None)


def judge(alerts, episodes):
    """Returns (true alert ids, {episode index: time its first telling alert told of it})."""
    first = {}
    for i, ep in enumerate(episodes):
        tells = [(t, aid) for aid, a in alerts.items() if (t := told(a, ep)) is not None]
        if tells:
            first[i] = min(tells)
    return {aid for _, aid in first.values()}, {i: t for i, (t, _) in first.items()}


def new_result(name):
    return {"source": name, "captures": 0, "failed": 0, "flows": 0, "benign_flows": 0,
            "alerts": 0, "false_alerts": 0, "false_flows": 0, "benign_alerted_flows": 0,
            "innocents_named": 0,
            "episodes": 0, "detected": 0,
            "delays": [], "wire_delays": [], "per_class": {}, "false_examples": [], "missed": [],
            "innocent_examples": [],
            "first_alerts": []}


def add_capture(res, flows, benign_flows, alerts, episodes, name):
    res["captures"] += 1
    res["flows"] += flows
    res["benign_flows"] += benign_flows
    true_ids, first = judge(alerts, episodes)
    res["alerts"] += len(alerts)
    attackers = {ip for ep in episodes for ip in ep.get("attackers", [])}
    if episodes and "*" not in attackers:
        for a in alerts.values():
            innocents = named(a) - attackers
            if innocents:
                res["innocents_named"] += 1
                if len(res["innocent_examples"]) < 30:
                    res["innocent_examples"].append(
                        f"{name}: {detail(a)['class']} names {' '.join(sorted(innocents))} "
                        f"(not an attacker) -> {a.get('dest_ip', '*')} {a['proto']}")
    for aid, a in alerts.items():
        if aid not in true_ids:
            res["false_alerts"] += 1
            res["false_flows"] += detail(a)["count"]
            if not named(a) & attackers:
                res["benign_alerted_flows"] += detail(a)["count"]
            if len(res["false_examples"]) < 30:
                res["false_examples"].append(
                    f"{name}: {detail(a)['class']} {a.get('src_ip', '*')} -> {a.get('dest_ip', '*')} "
                    f"{a['proto']} flows={detail(a)['count']} score={detail(a)['score']}")
    for i, ep in enumerate(episodes):
        pc = res["per_class"].setdefault(ep["class"], {"episodes": 0, "detected": 0})
        pc["episodes"] += 1
        res["episodes"] += 1
        if i in first:
            pc["detected"] += 1
            res["detected"] += 1
            if ep.get("start") is not None:
                delay = round(first[i] - ep["start"], 3)
                res["delays"].append(delay)
                pc["first_alert_max_s"] = max(pc.get("first_alert_max_s", delay), delay)
                wire = None
                if ep.get("first_packet") is not None:
                    wire = round(first[i] - max(ep["start"], ep["first_packet"]), 3)
                    res["wire_delays"].append(wire)
                    pc["first_alert_wire_max_s"] = max(pc.get("first_alert_wire_max_s", wire), wire)
                res["first_alerts"].append({"episode": i, "class": ep["class"],
                                            "from_start_s": delay, "from_first_packet_s": wire})
        else:
            res["missed"].append(f"{name}: {ep['class']} {' '.join(ep['attackers'])} -> "
                                 f"{' '.join(ep['victims'])}")


def finish(res):
    r = dict(res)
    b = max(r["benign_flows"], 1)
    r["false_per_1k"] = round(1000.0 * r["false_alerts"] / b, 2)
    r["benign_fpr"] = round(r["benign_alerted_flows"] / b, 5)
    r["recall"] = round(r["detected"] / r["episodes"], 4) if r["episodes"] else None
    r["precision"] = round((r["alerts"] - r["false_alerts"]) / r["alerts"], 4) if r["alerts"] else None
    d = r.pop("delays")
    r["first_alert_median_s"] = statistics.median(d) if d else None
    r["first_alert_max_s"] = max(d) if d else None
    w = r.pop("wire_delays")
    r["first_alert_wire_median_s"] = statistics.median(w) if w else None
    r["first_alert_wire_max_s"] = max(w) if w else None
    return r


# ---- lab runs ---------------------------------------------------------------------------------

# The protocol each lab tool attacks with (models/lab/lab.py; nmap -sV probes over TCP there).
LAB_PROTOS = {"ab": "TCP", "hydra": "TCP", "slowhttptest": "TCP", "hping3-syn": "TCP",
              "hping3-udp": "UDP", "hping3-icmp": "ICMP", "dnsflood": "UDP", "nmap-sS": "TCP",
              "nmap-sT": "TCP", "nmap-sV": "TCP", "nmap-sU": "UDP"}


def lab_episodes(binary, capture, attacks, config=None):
    """A lab run's episodes as `judge` takes them, each with its first packet on the wire, and
    its benign flows (label.py's labels). Returns (episodes, label.py's episodes, benign flows)."""
    sys.path.insert(0, HERE)
    import label as lab_label  # numpy
    episodes_raw = lab_label.load_attacks(attacks)
    episodes = []
    for e in episodes_raw:
        at_capture = e.get("attacker_ips_at_capture") or e.get("attacker_ips") or [e["attacker"]]
        victims = e.get("victim_ips_at_capture") or [e["victim"]]
        proto = LAB_PROTOS.get(e.get("attack"))
        episodes.append({"class": e["class"], "attackers": at_capture, "victims": victims,
                         "protos": [proto, "IPv6-ICMP"] if proto == "ICMP" else
                         [proto] if proto else None,
                         "start": float(e["start"]), "end": float(e["end"])})
    with tempfile.TemporaryDirectory() as tmp:
        feats = os.path.join(tmp, "features.csv")
        cmd = [binary, "features", capture, "-o", feats]
        if config:
            cmd += ["--config", config]
        subprocess.run(cmd, check=True, capture_output=True)
        _, _, meta, _, _ = lab_label.load_features(feats)
        label, _, episode_of = lab_label.label_rows(meta, episodes_raw)
        # Each episode's first packet on the wire: its earliest flow from an attacker to a victim.
        by_id = {raw["id"]: ep for ep, raw in zip(episodes, episodes_raw)}
        for ep in episodes:
            ep["first_packet"] = None
        for i, eid in enumerate(episode_of):
            ep = by_id.get(int(eid))
            if (ep is not None and lab_label.norm_ip(meta["src_ip"][i]) in ep["attackers"]
                    and lab_label.norm_ip(meta["dest_ip"][i]) in ep["victims"]):
                start = float(meta["start"][i])
                if ep["first_packet"] is None or start < ep["first_packet"]:
                    ep["first_packet"] = start
        uids = {}
        for i, uid in enumerate(meta["flow_uid"]):
            uids[uid] = uids.get(uid, 0) | int(label[i])
    benign = sum(1 for v in uids.values() if v == 0)
    return episodes, episodes_raw, benign


def lab(args, binary):
    flows, alerts, err = replay(binary, args.capture, args.model, args.config)
    if err:
        sys.exit(f"replay failed: {err}")
    episodes, _, benign = lab_episodes(binary, args.capture, args.attacks, args.config)
    res = new_result(args.name or os.path.basename(os.path.dirname(os.path.abspath(args.capture))))
    add_capture(res, flows, benign, alerts, episodes, os.path.basename(args.capture))
    return finish(res)


def isolated(args, binary):
    """Each episode of a lab run replayed alone: only its attacker's packets, from 2 s before
    its start to 30 s after its end (label.split_episodes). Its victim serves no one else then
    and no other attack goes on, as on a quiet network. An alert is true when it tells of any
    episode of the run (the window can hold the start of the attacker's next one); only the
    isolated episode counts for recall and first-alert delay. No benign flows are counted."""
    episodes, episodes_raw, _ = lab_episodes(binary, args.capture, args.attacks, args.config)
    import label as lab_label  # numpy; lab_episodes put models/ on the path
    res = new_result(args.name or os.path.basename(os.path.dirname(os.path.abspath(args.capture))))
    with tempfile.TemporaryDirectory() as tmp:
        pcaps = lab_label.split_episodes(args.capture, episodes_raw, tmp)
        for ep, raw in zip(episodes, episodes_raw):
            flows, alerts, err = replay(binary, pcaps[raw["id"]], args.model, args.config)
            if err:
                sys.exit(f"replay of episode {raw['id']} failed: {err}")
            # The alerts that tell of this episode or of none: one telling of the attacker's
            # next episode, its start in the window, is neither judged nor counted.
            true_ids, _ = judge(alerts, episodes)
            kept = {aid: a for aid, a in alerts.items()
                    if aid not in true_ids or told(a, ep) is not None}
            add_capture(res, flows, 0, kept, [ep], f"episode {raw['id']} ({raw.get('attack')})")
    return finish(res)


# ---- public captures --------------------------------------------------------------------------

# The public sources whose benign captures may be trained on (label.py --public); every other
# source is for evaluation only.
TRAINING_SOURCES = ("ntop+nDPI", "nfstream+nfstream", "zeek+zeek", "the-tcpdump-group+tcpdump")


def load_labels(path):
    """labels.csv: repo,path,role,class,attackers,victims,notes. role: attack (an episode of
    class with those attackers and victims), exclude (left out: not ordinary traffic, or an attack
    we do not detect), benign (said explicitly; everything not listed is benign)."""
    labels = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(r for r in f if not r.startswith("#")):
            key = f"{row['repo']}/{row['path']}"
            labels.setdefault(key, []).append(row)
    return labels


def public(args, binary):
    labels = load_labels(args.labels)
    training = set(args.training_sources.split(","))
    files = []
    for repo in sorted(os.listdir(args.dir)):
        if args.role == "eval" and repo in training:
            continue
        if args.role == "train" and repo not in training:
            continue
        for dirpath, _, names in os.walk(os.path.join(args.dir, repo)):
            for n in sorted(names):
                full = os.path.join(dirpath, n)
                rel = os.path.relpath(full, os.path.join(args.dir, repo))
                files.append((repo, rel, full))
    results = {}

    def one(item):
        repo, rel, full = item
        rows = labels.get(f"{repo}/{rel}", [])
        if any(r["role"] == "exclude" for r in rows):
            return repo, rel, None
        flows, alerts, err = replay(binary, full, args.model, args.config, timeout=120)
        return repo, rel, (flows, alerts, err, rows)

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for repo, rel, out in pool.map(one, files):
            res = results.setdefault(repo, new_result(repo))
            if out is None:
                continue
            flows, alerts, err, rows = out
            if err:
                res["failed"] += 1
                continue
            episodes = [{"class": r["class"], "attackers": r["attackers"].split(),
                         "victims": r["victims"].split(), "start": None}
                        for r in rows if r["role"] == "attack"]
            benign = 0 if episodes else flows
            add_capture(res, flows, benign, alerts, episodes, rel)
    out = [finish(r) for r in results.values()]
    total = new_result("all")
    for r in results.values():
        for k in ("captures", "failed", "flows", "benign_flows", "alerts", "false_alerts",
                  "false_flows", "benign_alerted_flows", "innocents_named", "episodes",
                  "detected"):
            total[k] += r[k]
        total["delays"] += r["delays"]
        total["wire_delays"] += r["wire_delays"]
    out.append(finish(total))
    return out


# ---- output -----------------------------------------------------------------------------------

COLUMNS = [("source", "{}"), ("captures", "{}"), ("flows", "{}"), ("benign_flows", "{}"),
           ("alerts", "{}"), ("false_alerts", "{}"), ("false_per_1k", "{:.2f}"),
           ("benign_fpr", "{:.4f}"), ("episodes", "{}"), ("detected", "{}"),
           ("precision", "{:.3f}"), ("first_alert_max_s", "{:.2f}"),
           ("first_alert_wire_max_s", "{:.2f}")]


def table(rows):
    lines = ["| " + " | ".join(c for c, _ in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        cells = []
        for c, f in COLUMNS:
            v = r.get(c)
            cells.append("-" if v is None else f.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    for name in ("lab", "isolated", "public"):
        p = sub.add_parser(name)
        p.add_argument("--model")
        p.add_argument("--config")
        p.add_argument("--binary")
        p.add_argument("--json")
        if name in ("lab", "isolated"):
            p.add_argument("capture")
            p.add_argument("attacks")
            p.add_argument("--name", help="the source's name (default: the capture's folder)")
        else:
            p.add_argument("dir")
            p.add_argument("--labels", required=True)
            p.add_argument("--role", choices=["eval", "train", "all"], default="all")
            p.add_argument("--training-sources", default=",".join(TRAINING_SOURCES),
                           help="repositories whose captures may be trained on (kept out with --role eval)")
            p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p = sub.add_parser("table")
    p.add_argument("results", nargs="+")
    argv = sys.argv[1:]
    if argv and argv[0] not in ("lab", "isolated", "public", "table", "-h", "--help"):
        argv = ["lab"] + argv  # the older form: evaluate.py CAPTURE ATTACKS_JSON [options]
    args = ap.parse_args(argv)
    if args.mode == "table":
        rows = []
        for path in args.results:
            data = json.load(open(path))
            rows += data if isinstance(data, list) else [data]
        print(table(rows))
        return
    binary = find_binary(args.binary)
    res = {"lab": lab, "isolated": isolated, "public": public}[args.mode](args, binary)
    rows = res if isinstance(res, list) else [res]
    print(table(rows))
    for r in rows:
        for k in ("missed", "false_examples", "innocent_examples"):
            for line in r[k][:10]:
                print(f"  {r['source']} {k}: {line}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
