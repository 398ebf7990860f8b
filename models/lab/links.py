"""Seeded Internet-like link settings for the lab's router topology (standard library only).

The router's WAN side reaches every remote host through wanem (models/lab/wanem). A run uses one
link preset: the access link (the line between the home router and its ISP: its own round trip,
jitter, loss, up/down rates and queue) and, per remote host, a distance (the rest of the way to
that host: more round trip, loss and the host's own rate limit). Each remote host's path is

    one-way delay  = (access RTT + distance RTT) x share (up) or x (1 - share) (down),
                     share drawn in 0.4..0.6, the total RTT kept within 5..800 ms
    jitter         = jitter fraction (preset) x one-way delay, at most 20 %
    loss per way   = 1 - (1 - access loss)(1 - distance loss), at most 3 %
    rate per way   = the remote host's rate (5..200 Mbit/s); the shared access link adds its own

and the shared access link carries all of it. "mixed" draws a preset per remote host (not one
physical line, but every link type in one run). "custom:rtt=LO-HI,loss=P,rate=LO-HI,jitter=F"
fixes ranges for experiments. Everything is drawn from the seed, so a (seed, preset) pair always
gives the same settings; settings are recorded in lab.json.
"""
from __future__ import annotations

import random

PRESETS = {
    # access RTT (ms), jitter fraction of the one-way delay, loss per way, down/up Mbit/s, queue ms
    "fiber": {"access_rtt": (1, 6), "jitter": (0.0, 0.05), "loss": (0.0, 0.001),
              "down": (100, 200), "up": (50, 200), "queue_ms": (10, 40)},
    "dsl": {"access_rtt": (10, 40), "jitter": (0.02, 0.10), "loss": (0.0, 0.005),
            "down": (8, 50), "up": (5, 10), "queue_ms": (50, 200)},
    "lte": {"access_rtt": (30, 90), "jitter": (0.05, 0.20), "loss": (0.002, 0.02),
            "down": (5, 60), "up": (5, 20), "queue_ms": (50, 300)},
    "satellite": {"access_rtt": (500, 650), "jitter": (0.02, 0.10), "loss": (0.005, 0.02),
                  "down": (10, 50), "up": (5, 10), "queue_ms": (100, 400)},
}
NAMES = ["fiber", "dsl", "lte", "satellite", "mixed", "none"]
DISTANCE_RTT = (4, 150)     # ms, from the ISP to a remote host
DISTANCE_LOSS = (0.0, 0.005)
REMOTE_RATE = (5, 200)      # Mbit/s, a remote host's own limit per direction
RTT_RANGE = (5.0, 800.0)
MAX_LOSS = 0.03
MAX_JITTER = 0.20


def parse_custom(spec: str) -> dict:
    """custom:rtt=100-300,loss=0.01,rate=20-100,jitter=0.1 -> ranges (rtt is the total per path)."""
    out = {"rtt": (50.0, 50.0), "loss": (0.0, 0.0), "rate": (0.0, 0.0), "jitter": (0.0, 0.0)}
    body = spec.split(":", 1)[1] if ":" in spec else ""
    for item in filter(None, body.split(",")):
        k, _, v = item.partition("=")
        if k not in out:
            raise ValueError(f"--links custom: unknown key {k!r} (rtt, loss, rate, jitter)")
        lo, _, hi = v.partition("-")
        out[k] = (float(lo), float(hi or lo))
        if out[k][0] > out[k][1] or out[k][0] < 0:
            raise ValueError(f"--links custom: bad range {item!r}")
    if not RTT_RANGE[0] <= out["rtt"][0] <= out["rtt"][1] <= RTT_RANGE[1] * 2:
        raise ValueError("--links custom: rtt must lie within 5..1600 ms")
    if out["loss"][1] > 0.2 or out["jitter"][1] > 0.5:
        raise ValueError("--links custom: loss at most 0.2, jitter at most 0.5")
    return out


def check_name(name: str) -> str:
    if name in NAMES or name.startswith("custom:") or name == "custom":
        if name.startswith("custom"):
            parse_custom(name)
        return name
    raise ValueError(f"unknown --links {name!r}: one of {', '.join(NAMES)} or custom:rtt=LO-HI,loss=P,...")


def _u(rng: random.Random, lo_hi) -> float:
    return rng.uniform(*lo_hi)


def draw(name: str, seed: int, remotes: list[tuple[str, list[str]]]) -> dict:
    """Link settings for preset `name`: the access link, the default path (the ISP side itself)
    and one path per (remote host name, its address prefixes)."""
    rng = random.Random(f"ewlab-links-{seed}-{name}")
    custom = parse_custom(name) if name.startswith("custom") else None
    access_preset = rng.choice(list(PRESETS)) if name == "mixed" else (None if custom else name)
    if custom:
        access = {"preset": "custom", "rtt_ms": 0.0, "jitter_frac": 0.0, "loss": 0.0,
                  "down_mbit": 0.0, "up_mbit": 0.0, "queue_ms": 100.0}
    else:
        p = PRESETS[access_preset]
        access = {"preset": access_preset, "rtt_ms": round(_u(rng, p["access_rtt"]), 2),
                  "jitter_frac": round(_u(rng, p["jitter"]), 4), "loss": round(_u(rng, p["loss"]), 5),
                  "down_mbit": round(_u(rng, p["down"]), 1), "up_mbit": round(_u(rng, p["up"]), 1),
                  "queue_ms": round(_u(rng, p["queue_ms"]), 1)}
    paths = []
    for host, prefixes in remotes:
        if custom:
            rtt = _u(rng, custom["rtt"])
            jit = _u(rng, custom["jitter"])
            loss = [round(_u(rng, custom["loss"]), 5) for _ in range(2)]
            rate = [round(_u(rng, custom["rate"]), 1) for _ in range(2)]
            preset = "custom"
        else:
            preset = rng.choice(list(PRESETS)) if name == "mixed" else name
            p = PRESETS[preset]
            acc_rtt = _u(rng, p["access_rtt"]) if name == "mixed" else access["rtt_ms"]
            acc_loss = _u(rng, p["loss"]) if name == "mixed" else access["loss"]
            jit = _u(rng, p["jitter"]) if name == "mixed" else access["jitter_frac"]
            rtt = min(RTT_RANGE[1], max(RTT_RANGE[0], acc_rtt + _u(rng, DISTANCE_RTT)))
            loss = [round(min(MAX_LOSS, 1 - (1 - acc_loss) * (1 - _u(rng, DISTANCE_LOSS))), 5) for _ in range(2)]
            rate = [round(_u(rng, REMOTE_RATE), 1) for _ in range(2)]
            jit = min(MAX_JITTER, jit)
        share = rng.uniform(0.4, 0.6)
        one_way = [rtt * share, rtt * (1 - share)]
        dirs = {}
        for i, d in enumerate(("up", "down")):
            dirs[d] = {"delay_ms": round(one_way[i], 3), "jitter_ms": round(one_way[i] * jit, 3),
                       "loss": loss[i], "rate_mbit": rate[i]}
        paths.append({"name": host, "prefixes": prefixes, "preset": preset, "rtt_ms": round(rtt, 2), **dirs})
    acc_oneway = access["rtt_ms"] / 2
    default = {"delay_ms": round(acc_oneway, 3), "jitter_ms": round(acc_oneway * access["jitter_frac"], 3),
               "loss": access["loss"]}
    return {"preset": name, "access": access, "default": default, "paths": paths}


def wanem_config(links: dict, seed: int, inner: str, outer: str) -> dict:
    """The wanem JSON configuration for drawn link settings."""
    acc = links["access"]
    cfg = {"comment": f"edgewatch lab links {links['preset']} seed {seed}", "seed": seed, "inner": inner, "outer": outer,
           "default": links["default"], "paths": []}
    if acc["down_mbit"] > 0 and acc["up_mbit"] > 0:
        cfg["link"] = {"up": {"rate_mbit": acc["up_mbit"], "queue_ms": acc["queue_ms"]},
                       "down": {"rate_mbit": acc["down_mbit"], "queue_ms": acc["queue_ms"]}}
    for p in links["paths"]:
        cfg["paths"].append({"name": p["name"], "prefixes": p["prefixes"],
                             "up": {k: v for k, v in p["up"].items() if v or k == "delay_ms"},
                             "down": {k: v for k, v in p["down"].items() if v or k == "delay_ms"}})
    return cfg


def lab_wanem_config(links: dict, seed: int, inner: str, outer: str) -> dict:
    """The wanem configuration for lab.py --wan, where wanem sits in front of the one lab server
    (inner = the server's side) and the "remote" of each path is a client or attacker address.

    wanem's "up" (inner -> outer) is then server -> host, the host's download: it gets the
    drawn "down" settings, and wanem's "down" (host -> server) the drawn "up" ones. The shared
    access link is left out (each host's path already stands for its own line), and so is the
    default path's delay: it only carries what belongs to no host (IPv6 multicast, link-local)
    and address resolution (ARP, IPv6 ND: local_resolution), which a real host does with its
    router on the local link, never with a server across the Internet."""
    cfg = {"comment": f"edgewatch lab --wan {links['preset']} seed {seed}: inner = server side, remote = host",
           "seed": seed, "inner": inner, "outer": outer, "local_resolution": True, "paths": []}
    for p in links["paths"]:
        cfg["paths"].append({"name": p["name"], "prefixes": p["prefixes"],
                             "up": {k: v for k, v in p["down"].items() if v or k == "delay_ms"},
                             "down": {k: v for k, v in p["up"].items() if v or k == "delay_ms"}})
    return cfg


if __name__ == "__main__":  # print a preset's draw: python3 links.py NAME SEED
    import json
    import sys
    name, seed = sys.argv[1], int(sys.argv[2])
    check_name(name)
    print(json.dumps(draw(name, seed, [("web1", ["198.51.100.80/32"]), ("ssh1", ["203.0.113.22/32"])]), indent=1))
