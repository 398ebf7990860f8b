#!/usr/bin/env python3
"""Checks what the README's main command printed, as CI runs it:

    cargo run --release -- replay tests/data/lab-mini.pcap >ALERTS 2>LOG
    python3 scripts/check_replay.py ALERTS LOG tests/data/lab-mini.attacks.json

The log must end with the summary line and the capture's packet count; every alert line must be
an EVE alert with the stable fields (docs/alert-schema.json has the whole schema, which the Rust
tests validate); every attack episode of the capture must be alerted, attacker to victim, with
its class; and no alert may name a host that no episode involves (a benign host alerted).
Exits 1 with the reasons when any of that fails. Standard library only.
"""

import json
import re
import sys

REQUIRED = ("timestamp", "event_type", "sensor_id", "alert_id", "src_ip", "dest_ip", "proto",
            "alert", "flow")


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
        if missing or alert.get("event_type") != "alert":
            problems.append(f"alert line {n} lacks {missing} or is not an alert: {line[:200]}")
            continue
        alerts.append(alert)
    if summary and int(summary.group(3)) != len(alerts):
        problems.append(f"the summary says {summary.group(3)} alerts, the output has {len(alerts)}")

    episodes = json.load(open(attacks_path, encoding="utf-8"))
    involved = set()
    for ep in episodes:
        ips = set(ep.get("attacker_ips") or [ep["attacker"]])
        involved |= ips | {ep["victim"]}
        hits = [a for a in alerts
                if {a["src_ip"], a["dest_ip"]} & ips and ep["victim"] in (a["src_ip"], a["dest_ip"])
                and ep["class"] in a["alert"]["signature"]]
        if not hits:
            problems.append(f"episode {ep['id']} ({ep['tool']}, {ep['class']}, {ep['attacker']} -> "
                            f"{ep['victim']}) has no alert of its class")
    benign = [a for a in alerts if not {a["src_ip"], a["dest_ip"]} <= involved]
    for a in benign[:10]:
        problems.append(f"alert on a host no episode involves: {a['src_ip']} -> {a['dest_ip']} "
                        f"{a['alert']['signature']}")

    if problems:
        print("check_replay: " + "\ncheck_replay: ".join(problems), file=sys.stderr)
        return 1
    print(f"check_replay: {summary.group(0)}; {len(episodes)} episodes alerted with their class, "
          f"no benign host alerted")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: check_replay.py ALERTS.jsonl REPLAY.log ATTACKS.json")
    sys.exit(main(*sys.argv[1:]))
