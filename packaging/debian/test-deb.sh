#!/usr/bin/env bash
# Checks the Debian packages made by build-deb.sh; run as root on Debian:
#
#   packaging/debian/test-deb.sh [DEB...]   (default: every ${CARGO_TARGET_DIR:-target}/debian/*.deb)
#
# For each package:
#   1. lintian: no error (the rest is printed);
#   2. contents: files, modes, the conffile (equal to packaging/debian/edgewatch.toml), no
#      dependency; `systemd-analyze verify` of the installed unit and its
#      `systemd-analyze security` exposure score (at most 2.0);
#   3. in a throwaway Debian bookworm root (debootstrap --variant=minbase with systemd, cached as
#      ${CARGO_TARGET_DIR:-target}/debian/bookworm-systemd.tar):
#      a. dpkg -i; `edgewatch --version` and `edgewatch validate` of the installed conffile;
#      b. `edgewatch run` in the root with chroot the way the unit runs it (an unprivileged user
#         holding only CAP_NET_RAW, no new privileges), on one end of a veth pair between two
#         network namespaces: it must capture a ping across the pair and exit 0 on SIGTERM;
#      c. with systemd-nspawn (package systemd-container), the root is booted with systemd in the
#         first namespace and the real unit is started with `systemctl start edgewatch` (the
#         config set to capture on the veth): the service must run as a dynamic user with
#         CAP_NET_RAW alone, log the ping's alert to the journal and stop with result success;
#      d. dpkg --purge, which must leave no file of the package behind.
# A package for another architecture (arm64 here) is installed with --force-architecture; its
# binary's --version and validate run through qemu-user (package qemu-user-static) when that is
# installed, and 3b and 3c are skipped (qemu-user cannot set packet socket options). Needs root, debootstrap, lintian and iproute2 (installed with apt-get when
# missing). Exits 1 on any failure; every namespace, mount and process it made goes away on exit.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
out_base="${CARGO_TARGET_DIR:-target}"
case "$out_base" in /*) ;; *) out_base="$PWD/$out_base" ;; esac

[ "$(id -u)" -eq 0 ] || { echo "test-deb.sh: needs root (chroot, network namespaces)" >&2; exit 1; }
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v lintian >/dev/null || need+=(lintian)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
if [ ${#need[@]} -gt 0 ]; then
    echo "test-deb.sh: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

passed=0
failed=0
indent() { sed "s/^/  $1: /"; }
check() {
    local what="$1"
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $what" >&2
    fi
}
# Polls a command for up to $1 tenths of a second.
wait_until() {
    local tenths="$1"
    shift
    for _ in $(seq 1 "$tenths"); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

if [ $# -gt 0 ]; then
    debs=("$@")
else
    shopt -s nullglob
    debs=("$out_base"/debian/*.deb)
    shopt -u nullglob
fi
if [ ${#debs[@]} -eq 0 ]; then
    echo "test-deb.sh: no package to check (build one with packaging/debian/build-deb.sh)" >&2
    exit 1
fi

work="$(mktemp -d)"
netns=()
pids=()
cleanup() {
    local p ns m
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for ns in "${netns[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    for m in "$work"/root*/proc "$work"/root*/dev; do
        if mountpoint -q "$m"; then umount -l "$m"; fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

# A pristine bookworm root with systemd, made once and kept as a tar (a fresh copy each time).
base_tar="$out_base/debian/bookworm-systemd.tar"
if [ ! -f "$base_tar" ]; then
    mirror="$(sed -n 's/^URIs: *\(.*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    echo "test-deb.sh: debootstrap bookworm (minbase, systemd) from $mirror"
    mkdir -p "$work/base" "$out_base/debian"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$work/base" "$mirror" \
        >"$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
    tar -C "$work/base" -cf "$base_tar.tmp" . && mv "$base_tar.tmp" "$base_tar"
    rm -rf "$work/base"
fi

# Two network namespaces joined by a veth pair: ewd0 10.199.79.1 in $1-a, ewd1 10.199.79.2 in $1-b.
make_lab() {
    netns+=("$1-a" "$1-b")
    ip netns add "$1-a"
    ip netns add "$1-b"
    ip link add ewd0 netns "$1-a" type veth peer name ewd1 netns "$1-b"
    ip -n "$1-a" addr add 10.199.79.1/24 dev ewd0
    ip -n "$1-b" addr add 10.199.79.2/24 dev ewd1
    ip -n "$1-a" link set ewd0 up
    ip -n "$1-b" link set ewd1 up
    ip -n "$1-a" link set lo up
}
drop_lab() {
    ip netns del "$1-a"
    ip netns del "$1-b"
}
ping_across() { ip netns exec "$1-b" ping -c 3 -i 0.2 -q 10.199.79.1 >/dev/null 2>&1 || true; }

no_lintian_error() { ! grep -q '^E: ' <<<"$1"; }
not_root() { [ -n "$1" ] && [ "${1%% *}" != 0 ]; }
gone() { ! kill -0 "$1" 2>/dev/null; }
no_package_file() {
    ! ls -d "$1/usr/bin/edgewatch" "$1/etc/edgewatch" "$1/usr/lib/systemd/system/edgewatch.service" 2>/dev/null
}
# The value of "Name:" in a /proc/PID/status text.
status_field() { sed -n "s/^$1:[[:space:]]*//p" <<<"$2" | tr '\t' ' '; }
cap_net_raw="$(printf '%016x' $((1 << 13)))"

host_arch="$(dpkg --print-architecture)"
n=0
for deb in "${debs[@]}"; do
    n=$((n + 1))
    echo "test-deb.sh: $deb"
    arch="$(dpkg-deb -f "$deb" Architecture)"
    version="$(dpkg-deb -f "$deb" Version)"

    # 1. lintian
    lintian_out="$(lintian --tag-display-limit 0 "$deb" 2>&1 || true)"
    [ -z "$lintian_out" ] || indent lintian <<<"$lintian_out"
    check "lintian: no error" no_lintian_error "$lintian_out"

    # 2. contents
    contents="$(dpkg-deb -c "$deb" | awk '{print $1, $2, $6}')"
    for line in "-rwxr-xr-x 0/0 ./usr/bin/edgewatch" \
        "-rw-r--r-- 0/0 ./etc/edgewatch/edgewatch.toml" \
        "-rw-r--r-- 0/0 ./usr/lib/systemd/system/edgewatch.service" \
        "-rw-r--r-- 0/0 ./usr/share/doc/edgewatch/copyright" \
        "-rw-r--r-- 0/0 ./usr/share/doc/edgewatch/changelog.Debian.gz"; do
        check "contains $line" grep -qxF -- "$line" <<<"$contents"
    done
    check "the config is a conffile" grep -qx '/etc/edgewatch/edgewatch.toml' \
        <(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles)
    check "the config is packaging/debian/edgewatch.toml" cmp -s \
        <(dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ./etc/edgewatch/edgewatch.toml) \
        packaging/debian/edgewatch.toml
    check "no dependency (static binary)" test -z "$(dpkg-deb -f "$deb" Depends)"

    root="$work/root$n"
    mkdir -p "$root"
    tar -C "$root" -xf "$base_tar"
    cp "$deb" "$root/tmp/edgewatch.deb"
    force=()
    [ "$arch" = "$host_arch" ] || force=(--force-architecture)
    check "dpkg -i" chroot "$root" dpkg "${force[@]}" -i /tmp/edgewatch.deb
    verify="$(systemd-analyze verify --root="$root" /usr/lib/systemd/system/edgewatch.service 2>&1 || echo "exit $?")"
    [ -z "$verify" ] || indent "systemd-analyze verify" <<<"$verify"
    check "systemd-analyze verify: no complaint" test -z "$verify"
    exposure="$(systemd-analyze security --offline=yes --root="$root" \
        /usr/lib/systemd/system/edgewatch.service 2>/dev/null | tail -n 1 || true)"
    echo "  systemd-analyze security: ${exposure#→ }"
    score="$(sed -n 's/.*exposure level for edgewatch.service: \([0-9.]*\).*/\1/p' <<<"$exposure")"
    check "systemd-analyze security exposure is at most 2.0 (got ${score:-none})" \
        awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }'

    # 3a. the installed binary
    runner=()
    if [ "$arch" != "$host_arch" ]; then
        qemu="$(case "$arch" in arm64) echo qemu-aarch64-static ;; armhf) echo qemu-arm-static ;; esac)"
        if [ -n "$qemu" ] && [ -x "/usr/bin/$qemu" ]; then
            cp "/usr/bin/$qemu" "$root/usr/bin/"
            runner=("/usr/bin/$qemu")
        else
            echo "  $arch binary not run: install qemu-user-static to run it"
            runner=(skip)
        fi
    fi
    if [ "${runner[*]}" != skip ]; then
        check "edgewatch --version is $version" \
            test "$(chroot "$root" "${runner[@]}" /usr/bin/edgewatch --version)" = "edgewatch ${version%-*}"
        check "edgewatch validate --config /etc/edgewatch/edgewatch.toml" \
            chroot "$root" "${runner[@]}" /usr/bin/edgewatch validate --config /etc/edgewatch/edgewatch.toml
    fi
    if [ "$arch" = "$host_arch" ]; then
        # 3b. the unit's identity and privileges, with setpriv: a user that is not root, only
        # CAP_NET_RAW (ambient, as AmbientCapabilities= gives it), no new privileges.
        tag="ewdeb$$-$n"
        make_lab "$tag"
        mkdir -p "$root/var/lib/edgewatch"
        mount -t proc proc "$root/proc"
        mount --bind /dev "$root/dev"
        chown 65534:65534 "$root/var/lib/edgewatch"
        # Threshold 0 makes every flow an alert, so the alerts list what the agent saw.
        sed 's/^# threshold = 0.5$/threshold = 0.0/' "$root/etc/edgewatch/edgewatch.toml" \
            >"$root/tmp/edgewatch.toml"
        ip netns exec "$tag-a" chroot "$root" setpriv --reuid=65534 --regid=65534 --clear-groups \
            --inh-caps=-all,+net_raw --ambient-caps=-all,+net_raw --bounding-set=-all,+net_raw \
            --no-new-privs /usr/bin/edgewatch run --config /tmp/edgewatch.toml \
            --interface ewd0 --state-dir /var/lib/edgewatch \
            >"$work/alerts$n" 2>"$work/agent$n.log" &
        agent=$!
        pids+=("$agent")
        wait_until 300 grep -q 'Capturing on ewd0' "$work/agent$n.log" || true
        ping_across "$tag"
        wait_until 100 grep -q '"proto":"ICMP"' "$work/alerts$n" || true
        kill -TERM "$agent" 2>/dev/null || true
        status=0
        wait "$agent" || status=$?
        indent agent <"$work/agent$n.log"
        check "agent ran as nobody with CAP_NET_RAW and exited 0 on SIGTERM" test "$status" -eq 0
        check "agent saw the ping between the namespaces" grep -q '"proto":"ICMP"' "$work/alerts$n"
        umount -l "$root/proc" "$root/dev"

        # 3c. the real unit under systemd, in a container sharing the first namespace.
        if command -v systemd-nspawn >/dev/null; then
            conf="$root/etc/edgewatch/edgewatch.toml"
            sed -i -e 's/^interfaces = \[\]$/interfaces = ["ewd0"]/' \
                -e 's/^# threshold = 0.5$/threshold = 0.0/' "$conf"
            systemd-nspawn -q -D "$root" -M "ewdeb$$" --register=no --keep-unit \
                --network-namespace-path="/run/netns/$tag-a" -b >"$work/nspawn$n.log" 2>&1 &
            nspawn=$!
            pids+=("$nspawn")
            leader=""
            find_leader() { leader="$(ps -o pid= --ppid "$nspawn" | tr -d ' ' | head -n 1)"; [ -n "$leader" ]; }
            wait_until 100 find_leader || true
            inside() { nsenter -t "$leader" -a -r -w "$@"; }
            booted() { inside systemctl is-system-running 2>/dev/null | grep -Eq '^(running|degraded)$'; }
            if [ -n "$leader" ] && wait_until 1800 booted; then
                check "systemctl start edgewatch" inside systemctl start edgewatch
                journal() { inside journalctl -q -u edgewatch -o cat --no-pager; }
                capturing() { journal | grep -q 'Capturing on ewd0'; }
                wait_until 300 capturing || true
                main_pid="$(inside systemctl show -P MainPID edgewatch)"
                proc_status="$(inside cat "/proc/$main_pid/status" 2>/dev/null || true)"
                uid="$(status_field Uid "$proc_status")"
                check "service runs as a dynamic user, not root (Uid: $uid)" not_root "$uid"
                check "service holds CAP_NET_RAW alone" \
                    test "$(status_field CapEff "$proc_status")" = "$cap_net_raw"
                check "service's bounding set is CAP_NET_RAW" \
                    test "$(status_field CapBnd "$proc_status")" = "$cap_net_raw"
                check "service has no new privileges" test "$(status_field NoNewPrivs "$proc_status")" = 1
                ping_across "$tag"
                alerted() { journal | grep -q '"proto":"ICMP"'; }
                check "service logged the ping's alert to the journal" wait_until 100 alerted
                check "systemctl stop edgewatch" inside systemctl stop edgewatch
                result="$(inside systemctl show -P Result edgewatch)"
                exit_status="$(inside systemctl show -P ExecMainStatus edgewatch)"
                journal | tail -n 5 | indent journal
                check "service stopped cleanly (Result=$result, ExecMainStatus=$exit_status)" \
                    test "$result/$exit_status" = "success/0"
            else
                failed=$((failed + 1))
                echo "FAIL: the container did not boot (leader ${leader:-none}:" \
                    "$(inside systemctl is-system-running 2>&1 || true))" >&2
                indent nspawn <"$work/nspawn$n.log" | tail -n 20
            fi
            kill -TERM "$nspawn" 2>/dev/null || true
            wait_until 300 gone "$nspawn" || kill -KILL "$nspawn" 2>/dev/null || true
            wait "$nspawn" 2>/dev/null || true
        else
            echo "  systemd stage skipped (install systemd-container for systemd-nspawn)"
        fi
        drop_lab "$tag"
    else
        # qemu-user does not translate packet socket options (PACKET_ADD_MEMBERSHIP fails
        # with ENOPROTOOPT), so a foreign binary cannot capture here.
        echo "  $arch package: capture and systemd stages run only for $host_arch packages"
    fi

    # 3d. purge
    check "dpkg --purge" chroot "$root" dpkg --purge edgewatch
    check "purge leaves no file of the package" no_package_file "$root"
    rm -rf "$root"
done

if command -v shellcheck >/dev/null; then
    check "shellcheck build-deb.sh test-deb.sh" shellcheck "$here/build-deb.sh" "$here/test-deb.sh"
fi
echo "test-deb.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
