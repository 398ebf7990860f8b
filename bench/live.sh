#!/usr/bin/env bash
# Live capture at speed: the highest packet rate each capture backend takes with zero drops, and
# the CPU time edgewatch spends per packet.
#
#   sudo bench/live.sh [RATE...]     (packets/s; 0 = as fast as the generator goes;
#                                     default: 10000 25000 50000 100000 200000 400000 0)
#   sudo TRAFFIC=flood BACKENDS=tpacket bench/live.sh 200000 500000
#
# The generator runs on CPU GEN_CPU (default 0) and the agent on CPU AGENT_CPU (default 1), with
# `taskset`, so that the figures are the agent's and not the generator's; set both empty to let
# the scheduler place them. TRAFFIC=bench (the default) replays the bench capture below with
# tcpreplay; TRAFFIC=flood sends TCP SYNs from one host to one port with random source ports
# (every packet a new flow) with trafgen (netsniff-ng, installed when missing), paced at RATE by
# a token bucket (tc tbf, 1,000 frames deep) on the sending interface, TRAFFIC=spoofed the same
# from a random source address each (a spoofed SYN flood), and both report when the first
# flood alert was written, in seconds after the flood started (alert_s). With
# BESIDE=1, tests/data/lab-mini.pcap (60 s of lab traffic with four attack episodes) is replayed
# at its own pace beside each flood, the flood lasts as long, and the script says how many of
# the four episodes were still alerted with their class and how many lab hosts were alerted
# falsely: the ordinary flows are still evaluated under the flood (the lab's frames pass the
# same token bucket, a few hundred a second).
#
# Makes two network namespaces joined by a veth pair (removed on exit), runs `edgewatch run` on
# one end with each backend (BACKENDS="tpacket pnet" by default, THREADS=1, WORKERS=0 = one per
# CPU up to 4) and replays a capture from the other end with `tcpreplay --pps RATE`
# (tcpreplay is installed with apt-get when missing). The capture is bench/gen_capture.py's
# traffic with whole frames (`--snaplen 65535`, seed 1, PACKETS=200000), looped: each trial
# sends RATE x SECONDS_PER_TRIAL (3) packets, at least 100,000; a --topspeed trial 1,000,000.
# For each trial it prints the rate tcpreplay reached, the packets it sent, the frames
# edgewatch read, the kernel's drops (tpacket: edgewatch's kernel_drops; pnet, which cannot
# read them: the socket's drop count from `ss -0 -m`, read just before the agent stops), its
# queue drops, the packets lost (sent - read, whatever the cause) and the CPU time of the
# edgewatch process per packet read (utime + stime from /proc/PID/stat, 10 ms ticks, from just
# before the replay to when the last frame is read; the whole pipeline, model included), and of
# its capture threads alone (cap_ns/pkt: reading and parsing frames, the backend's own cost).
# Also: the SYNs the agent shed (shed, see docs/architecture.md, "Queues") and its peak RSS
# (peak_kib, VmHWM). ROUTER=1 runs the agent with the OpenWrt package's memory bounds (a 1 MiB
# ring, 8,192 flows, 4,096 hosts, 1,024 incidents: packaging/openwrt/files/edgewatch.config).
# Ends with the highest rate with zero loss (shed SYNs count as lost) per backend. PERF=DIR
# also records the agent's profile during each trial (`perf record --call-graph dwarf`, 499 Hz)
# into DIR/BACKEND-RATE.data, for bench/perf_report.py with a build that has symbols
# (`cargo build --profile profiling`, EDGEWATCH_BIN=target/profiling/edgewatch); LOGS=DIR keeps
# the agent's log of each trial (its stats every 0.2 s) as DIR/BACKEND-RATE.log. Needs root
# (namespaces), iproute2 and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/live.sh: run as root (it makes network namespaces)" >&2; exit 1; }
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(10000 25000 50000 100000 200000 400000 0)
backends=(${BACKENDS:-tpacket pnet})
traffic=${TRAFFIC:-bench}
beside=${BESIDE:-0}
gen_cpu=${GEN_CPU-0}
agent_cpu=${AGENT_CPU-1}
[ "$(nproc)" -ge 2 ] || { gen_cpu=""; agent_cpu=""; }
gen_pin=() agent_pin=()
[ -z "$gen_cpu" ] || gen_pin=(taskset -c "$gen_cpu")
[ -z "$agent_cpu" ] || agent_pin=(taskset -c "$agent_cpu")
threads=${THREADS:-1}
workers=${WORKERS:-0}
packets=${PACKETS:-200000}
seconds=${SECONDS_PER_TRIAL:-3}
if ! command -v tcpreplay >/dev/null; then
    apt-get install -y tcpreplay >/dev/null
fi
flood=0
case $traffic in
    bench) ;;
    flood | spoofed) flood=1 ;;
    *) echo "bench/live.sh: TRAFFIC is bench, flood or spoofed" >&2; exit 1 ;;
esac
if [ "$flood" = 1 ] && ! command -v trafgen >/dev/null; then
    apt-get install -y netsniff-ng >/dev/null
fi
# EDGEWATCH_BIN=PATH measures another build (an older one, to compare) instead of this tree's.
if [ -n "${EDGEWATCH_BIN:-}" ]; then
    bin=$EDGEWATCH_BIN
else
    cargo build --release --quiet
    bin="$(pwd)/${CARGO_TARGET_DIR:-target}/release/edgewatch"
fi
capture="/tmp/edgewatch-live-${packets}.pcap"
[ -f "$capture" ] || python3 bench/gen_capture.py --packets "$packets" --seed 1 --snaplen 65535 -q -o "$capture"

work=$(mktemp -d)
# The flood: a SYN to 10.99.0.1:80 from 10.99.0.2 (spoofed: from a random address), a random
# source port and sequence number each.
saddr=10.99.0.2
[ "$traffic" != spoofed ] || saddr="drnd()"
cat >"$work/syn.cfg" <<EOF
{
  eth(da=02:00:00:00:00:01, sa=02:00:00:00:00:02),
  ipv4(saddr=$saddr, daddr=10.99.0.1, ttl=64),
  tcp(sp=drnd(), dp=80, seq=drnd(), syn, win=64240)
}
EOF
ns_a="ewbench-a-$$"
ns_b="ewbench-b-$$"
agent=""
cleanup() {
    [ -z "$agent" ] || kill "$agent" 2>/dev/null || true
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add ewb0 netns "$ns_a" type veth peer name ewb1 netns "$ns_b"
for ns in "$ns_a" "$ns_b"; do
    # No IPv6 (no neighbour discovery chatter): the capture's packets are all that crosses.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
done
ip -n "$ns_a" link set ewb0 mtu 9000 up
ip -n "$ns_b" link set ewb1 mtu 9000 up
# RPS=1: the agent's CPU receives the frames (writes them into the ring), as a router's CPU
# serves its NIC's interrupts; without it the kernel does that on the sender's CPU, which caps
# the generator near 465k packets/s here. Frames the receive backlog drops never reach the
# agent: they show as lost, not as k_drops.
if [ "${RPS:-0}" = 1 ] && [ -n "$agent_cpu" ]; then
    ip netns exec "$ns_a" sh -c "printf '%x' $((1 << agent_cpu)) >/sys/class/net/ewb0/queues/rx-0/rps_cpus"
fi

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# The same for the capture threads alone (named ew-cap-IF).
capture_ticks() {
    local n=0 t
    for t in /proc/"$1"/task/*; do
        if grep -q '^ew-cap-' "$t/comm" 2>/dev/null; then
            n=$((n + $(awk '{ print $14 + $15 }' "$t/stat")))
        fi
    done
    echo "$n"
}
# The frames counter of the agent's last stats line.
frames_now() { grep -o '"frames":[0-9]*' "$work/agent.log" | tail -1 | cut -d: -f2; }
# A counter of the agent's final stats line. Builds before 2026-12-06 do not log it: their
# columns show "?", and shardq_drop "?N" with N all their queue drops (the summary line's).
final() { { grep 'Stats at the end' "$work/agent.log" || true; } | grep -o "\"$1\":[0-9]*" | cut -d: -f2 || true; }

router_capture="" router_flow="" router_rest=""
if [ "${ROUTER:-0}" = 1 ]; then
    router_capture="ring_blocks = 8"
    router_flow="max_flows = 8192"
    router_rest=$'[host]\nmax_hosts = 4096\n[alert]\nmax_incidents = 1024'
fi

declare -A best
printf '%-8s %10s %10s %10s %9s %9s %9s %9s %9s %10s %10s %8s %9s\n' backend pps_reached sent read \
    k_drops capq_drop shardq_drop shed lost cpu_ns/pkt cap_ns/pkt alert_s peak_kib
for backend in "${backends[@]}"; do
    best[$backend]=none
    for rate in "${rates[@]}"; do
        cat >"$work/edgewatch.toml" <<EOF
sensor_id = "bench"
[capture]
backend = "$backend"
threads = $threads
$router_capture
[flow]
workers = $workers
$router_flow
[output]
stats_interval_s = 0.2
$router_rest
EOF
        rm -f "$work/alerts.jsonl"
        ip netns exec "$ns_a" "${agent_pin[@]}" "$bin" run --interface ewb0 \
            --config "$work/edgewatch.toml" --alerts "$work/alerts.jsonl" 2>"$work/agent.log" &
        agent=$!
        for _ in $(seq 100); do
            grep -q 'Capturing on' "$work/agent.log" && break
            sleep 0.1
        done
        grep -q 'Capturing on' "$work/agent.log" || { cat "$work/agent.log" >&2; exit 1; }
        if [ "$rate" = 0 ]; then
            count=1000000
            speed=(--topspeed)
        else
            count=$(( rate * seconds > 100000 ? rate * seconds : 100000 ))
            speed=(--pps="$rate")
        fi
        # Beside lab-mini's 60 s: a flood of 62 s (top speed: 30M packets, about a minute here).
        if [ "$flood" = 1 ] && [ "$beside" = 1 ]; then
            count=$(( rate > 0 ? rate * 62 : 30000000 ))
        fi
        loops=$(( (count + packets - 1) / packets ))
        before=$(cpu_ticks "$agent")
        cap_before=$(capture_ticks "$agent")
        profiler=""
        if [ -n "${PERF:-}" ]; then
            mkdir -p "$PERF"
            perf record -q -F 499 --call-graph dwarf,16384 -p "$agent" \
                -o "$PERF/$backend-$rate.data" >/dev/null 2>&1 &
            profiler=$!
        fi
        started=$(date +%s.%N)
        alert_s=-
        if [ "$flood" = 1 ]; then
            ( while ! grep -q '"flood"' "$work/alerts.jsonl" 2>/dev/null; do sleep 0.05; done
              echo "$(date +%s.%N) - $started" | bc >"$work/alert_s" ) &
            watcher=$!
            # trafgen's own rate (-b) sends RATE packets at full speed and then sleeps out the
            # second: bursts far above RATE. A token bucket on the sender's interface paces the
            # frames (54 bytes each) at RATE instead; trafgen sends through it (-q) and waits
            # on it when it is full, so nothing is dropped before the agent's end.
            tc -n "$ns_b" qdisc del dev ewb1 root 2>/dev/null || true
            [ "$rate" = 0 ] ||
                tc -n "$ns_b" qdisc add dev ewb1 root tbf rate "$((rate * 54 * 8))bit" burst 54000 limit 540000
            lab=""
            if [ "$beside" = 1 ]; then
                ip netns exec "$ns_b" "${gen_pin[@]}" tcpreplay -i ewb1 tests/data/lab-mini.pcap \
                    >"$work/lab.out" 2>&1 &
                lab=$!
            fi
            ip netns exec "$ns_b" "${gen_pin[@]}" trafgen -q -o ewb1 -i "$work/syn.cfg" -P 1 -n "$count" \
                >"$work/trafgen.out" 2>&1
            ended=$(date +%s.%N)
            sent=$(tr '\r' '\n' <"$work/trafgen.out" | awk '/packets outgoing/ { n = $1 } END { print n }')
            reached=$(echo "$sent / ($ended - $started)" | bc)
            if [ -n "$lab" ]; then
                wait "$lab"
                sent=$((sent + $(awk '/Successful packets:/ { print $3 }' "$work/lab.out")))
            fi
        else
            ip netns exec "$ns_b" "${gen_pin[@]}" tcpreplay -i ewb1 "${speed[@]}" --loop="$loops" \
                --limit="$count" "$capture" >"$work/tcpreplay.out" 2>&1
            sent=$(awk '/Successful packets:/ { print $3 }' "$work/tcpreplay.out")
            reached=$(awk '/Rated:/ { for (i = 1; i <= NF; i++) if ($i == "pps") print int($(i - 1)) }' "$work/tcpreplay.out")
        fi
        # Until every sent frame is read, or the count stops moving for a second.
        last=-1 still=0
        while [ "$still" -lt 5 ]; do
            sleep 0.2
            now=$(frames_now)
            [ "${now:-0}" -lt "$sent" ] || break
            if [ "${now:-0}" = "$last" ]; then still=$((still + 1)); else still=0; fi
            last=${now:-0}
        done
        after=$(cpu_ticks "$agent")
        cap_after=$(capture_ticks "$agent")
        if [ -n "$profiler" ]; then
            kill -INT "$profiler"
            wait "$profiler" || true
        fi
        peak_kib=$(awk '/^VmHWM/ { print $2 }' "/proc/$agent/status")
        # The socket's drop count (skmem d), which pnet does not read: see what `ss` says.
        ss_drops=$(ip netns exec "$ns_a" ss -0 -m -p -n | grep "pid=$agent," |
            grep -o 'skmem:([^)]*' | grep -o ',d[0-9]*' | tr -d ',d' | awk '{ n += $1 } END { print n + 0 }')
        kill -TERM "$agent"
        wait "$agent" || true
        agent=""
        [ -z "${LOGS:-}" ] || { mkdir -p "$LOGS"; cp "$work/agent.log" "$LOGS/$backend-$rate.log"; }
        if [ "$flood" = 1 ]; then
            kill "$watcher" 2>/dev/null || true
            wait "$watcher" 2>/dev/null || true
            [ ! -s "$work/alert_s" ] || alert_s=$(printf '%.2f' "$(cat "$work/alert_s")")
            rm -f "$work/alert_s"
        fi
        capq_drops=$(final capture_queue_drops)
        shardq_drops=$(final shard_queue_drops)
        shed=$(final shed_syns)
        # run: P packets, F flows, A alerts, S skipped, Q dropped, K dropped by the kernel
        read -r read_frames q_drops k_drops < <(awk '/^run: / {
            gsub(",", ""); print $2, $10, $12 }' "$work/agent.log")
        lost=$(( sent > read_frames ? sent - read_frames : 0 ))
        [ "$backend" != pnet ] || k_drops=$ss_drops
        per_read=$(( read_frames > 0 ? read_frames : 1 ))
        ns_per_pkt=$(( (after - before) * 1000000000 / hz / per_read ))
        cap_ns_per_pkt=$(( (cap_after - cap_before) * 1000000000 / hz / per_read ))
        if [ "$flood" = 1 ] && [ "$beside" = 1 ]; then
            python3 - "$work/alerts.jsonl" tests/data/lab-mini.attacks.json <<'PY' >"$work/beside.txt"
import json, sys
alerts = [json.loads(l) for l in open(sys.argv[1])]
episodes = json.load(open(sys.argv[2]))
def named(a):
    top = a["alert"]["context"]["edgewatch"].get("evidence", {}).get("top_sources", [])
    return {a.get("src_ip"), a.get("dest_ip")} | {s["ip"] for s in top}
def cls(a):
    return a["alert"]["context"]["edgewatch"]["class"]
hit = [any(cls(a) == e["class"] and {e["attacker"], e["victim"]} <= named(a) for a in alerts)
       for e in episodes]
found = sum(hit)
missed = [e["class"] for e, h in zip(episodes, hit) if not h]
involved = {e["attacker"] for e in episodes} | {e["victim"] for e in episodes}
false = {h for a in alerts for h in named(a) if h and h.startswith("10.77.") and h not in involved}
print(f"beside the flood: lab-mini episodes alerted with their class {found} of {len(episodes)}, "
      f"(missed: {', '.join(missed) or 'none'}), lab hosts alerted falsely {len(false)}")
PY
        fi
        printf '%-8s %10s %10s %10s %9s %9s %9s %9s %9s %10s %10s %8s %9s\n' "$backend" "$reached" \
            "$sent" "$read_frames" "$k_drops" "${capq_drops:-?}" "${shardq_drops:-?$q_drops}" "${shed:-?}" \
            "$lost" "$ns_per_pkt" "$cap_ns_per_pkt" "$alert_s" "$peak_kib"
        [ ! -s "$work/beside.txt" ] || { cat "$work/beside.txt"; rm -f "$work/beside.txt"; }
        if [ "$lost" = 0 ] && [ "$q_drops" = 0 ] && [ "$k_drops" = 0 ] && [ "${shed:-0}" = 0 ]; then
            if [ "${best[$backend]}" = none ] || [ "$reached" -gt "${best[$backend]%% *}" ]; then
                best[$backend]="$reached pps (${ns_per_pkt} ns CPU per packet, ${cap_ns_per_pkt} ns in capture)"
            fi
        fi
    done
done
for backend in "${backends[@]}"; do
    echo "highest rate with zero drops, $backend: ${best[$backend]}"
done
