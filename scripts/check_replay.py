#!/usr/bin/env python3
"""Checks what the README's main command printed, as CI runs it:

    cargo run --release -- replay tests/data/lab-mini.pcap >ALERTS 2>LOG
    python3 scripts/check_replay.py ALERTS LOG tests/data/lab-mini.attacks.json

The log must end with the summary line and the capture's packet count; every alert line must be
an EVE alert with the stable fields (docs/alert-schema.json has the whole schema, which the Rust
tests validate), and the summary must count the alerts (their updates share an alert_id); every
attack episode of the capture must be alerted with its class, naming its attacker and its victim;
and no alert may name a host that no episode involves (a benign host alerted).
Exits 1 with the reasons when any of that fails. Standard library only.
"""

import json
import re
import sys

REQUIRED = ("timestamp", "event_type", "host", "flow_id", "proto", "alert", "flow")
DETAIL = ("sensor_id", "alert_id", "update", "final", "class", "score", "count", "evidence")


def detail(alert):
    return alert["alert"].get("context", {}).get("edgewatch", {})


def hosts(alert):
    """The hosts an alert names: its attacker, its victim, and a flood's top sources."""
    named = {alert.get("src_ip"), alert.get("dest_ip")}
    named |= {s["ip"] for s in detail(alert).get("evidence", {}).get("top_sources", [])}
    return named - {None}


def main(alerts_path, log_path, attacks_path):
    problems = []
    log = open(log_path, encoding="utf-8").read()
    summary = re.search(r"^replay: (\d+) packets, (\d+) flows, (\d+) alerts, .*$", log, re.M)
    if not summary:
        problems.append(f"no summary line in the log:\n{log}")
    elif int(summary.group(1)) == 0:
        problems.append(f"the summary reports no packets: {summary.group(0)}")
    if "panicked" in log:
        problems.append("a thread panicked:\n" + log)

    alerts = []
    for n, line in enumerate(open(alerts_path, encoding="utf-8"), 1):
        try:
            alert = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"alert line {n} is not JSON ({e}): {line[:200]}")
            continue
        missing = [k for k in REQUIRED if k not in alert]
        missing += [k for k in DETAIL if k not in detail(alert)] if "alert" in alert else []
        if missing or alert.get("event_type") != "alert":
            problems.append(f"alert line {n} lacks {missing} or is not an alert: {line[:200]}")
            continue
        alerts.append(alert)
    ids = {detail(a)["alert_id"] for a in alerts}
    if summary and int(summary.group(3)) != len(ids):
        problems.append(f"the summary says {summary.group(3)} alerts, the output has {len(ids)}")

    episodes = json.load(open(attacks_path, encoding="utf-8"))
    involved = set()
    for ep in episodes:
        ips = set(ep.get("attacker_ips") or [ep["attacker"]])
        involved |= ips | {ep["victim"]}
        hits = [a for a in alerts
                if hosts(a) & ips and ep["victim"] in hosts(a) and detail(a)["class"] == ep["class"]]
        if not hits:
            problems.append(f"episode {ep['id']} ({ep['tool']}, {ep['class']}, {ep['attacker']} -> "
                            f"{ep['victim']}) has no alert of its class")
    benign = [a for a in alerts if not hosts(a) <= involved]
    for a in benign[:10]:
        problems.append(f"alert on a host no episode involves: {sorted(hosts(a))} "
                        f"{a['alert']['signature']}")

    if problems:
        print("check_replay: " + "\ncheck_replay: ".join(problems), file=sys.stderr)
        return 1
    print(f"check_replay: {summary.group(0)}; {len(ids)} alerts in {len(alerts)} records; "
          f"{len(episodes)} episodes alerted with their class, no benign host alerted")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: check_replay.py ALERTS.jsonl REPLAY.log ATTACKS.json")
    sys.exit(main(*sys.argv[1:]))
