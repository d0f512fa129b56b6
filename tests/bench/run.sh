#!/usr/bin/env bash
# ringlan benchmark: two network namespaces joined by one veth pair, and in
# one invocation, round after round, the same measurements over
#   raw          the veth itself,
#   tinc         tinc 1.0 in `Mode = switch` (L2, the closest peer to ringlan),
#   nebula       Nebula (L3, UDP, Noise),
#   wireguard-go WireGuard in Go (L3, UDP; the userspace implementation, like
#                the others here),
#   ringlan      target/release/ringlan (built first if missing or stale),
# and, when named in BENCH_SYSTEMS (not by default), three yardsticks:
#   floor        agent/examples/tap_floor.rs: TAP frames cut into datagrams
#                and sent with UDP GSO/GRO, nothing else (no crypto, no
#                protocol), the least a TAP-over-UDP VPN does per byte here,
#   floor-aes    the same with every datagram sealed and opened with
#                AES-256-GCM as ringlan's are,
#   floor-ack    floor-aes with one sealed acknowledgement datagram back per
#                16 received in a batch (FLOOR_ACK_EVERY), as ringlan's receiver sends,
# at each underlay loss rate (nftables `numgen random` drops on both hosts'
# input). Per system and loss it prints the median, min and max over the
# rounds of: single-stream and 4-stream TCP throughput (iperf3), idle RTT,
# RTT under load (ping during the single stream), the daemons' CPU seconds
# per GB carried (single stream), their peak RSS, and the ratios to the best
# peer and to raw veth; then the issue's targets for ringlan, met or not.
# All VPNs stay up for the whole run and every round measures every system
# in turn, so all see similar load from whatever else shares the machine.
#
# Usage (root): tests/bench/run.sh
# Environment: BENCH_ROUNDS (5), BENCH_SECONDS (10), BENCH_PINGS (20),
# BENCH_LOSS ("0 0.1 1", percent), BENCH_SYSTEMS ("raw tinc nebula
# wireguard-go ringlan"), RINGLAN_BIN (default target/release/ringlan; when
# set, used as is, never built), BENCH_TCP_CC (the iperf3 streams' TCP
# congestion control, default the kernel's: `sysctl net.ipv4.tcp_congestion_control`;
# printed in the header, since BBR and CUBIC answer a VPN's queues and losses
# differently), BENCH_RINGLAN_IO_THREADS (ringlan's `io_threads`: auto,
# true or false; default the config's default, auto; printed in the header),
# FLOOR_BIN (the floor's binary; default target/release/examples/tap_floor,
# built first when missing). Missing Debian packages (iperf3, tinc,
# nebula, wireguard-go, wireguard-tools, nftables, jq, ethtool) are installed first.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECS="${BENCH_SECONDS:-10}"
PINGS="${BENCH_PINGS:-20}"
ROUNDS="${BENCH_ROUNDS:-5}"
LOSSES="${BENCH_LOSS-0 0.1 1}"
SYSTEMS="${BENCH_SYSTEMS:-raw tinc nebula wireguard-go ringlan}"
TCP_CC="${BENCH_TCP_CC:-$(sysctl -n net.ipv4.tcp_congestion_control)}"
PEERS=(tinc nebula wireguard-go)
BUILD_RINGLAN=0
if [ -z "${RINGLAN_BIN:-}" ]; then
    RINGLAN_BIN="$repo/target/release/ringlan"
    BUILD_RINGLAN=1
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "bench: needs root (network namespaces); run: sudo $0" >&2
    exit 1
fi
wants() { [[ " $SYSTEMS " == *" $1 "* ]]; }

# install_missing: the Debian packages of the wanted systems and tools.
install_missing() {
    local need=() t pkg
    for t in ip:iproute2 iperf3:iperf3 ping:iputils-ping nft:nftables jq:jq ethtool:ethtool; do
        command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
    done
    wants tinc && { command -v tincd >/dev/null || need+=(tinc); }
    wants nebula && { command -v nebula >/dev/null && command -v nebula-cert >/dev/null || need+=(nebula); }
    if wants wireguard-go; then
        command -v wireguard-go >/dev/null || need+=(wireguard-go)
        command -v wg >/dev/null || need+=(wireguard-tools)
    fi
    [ "${#need[@]}" -eq 0 ] && return 0
    echo "bench: installing ${need[*]}"
    command -v apt-get >/dev/null || { echo "bench: missing ${need[*]} and no apt-get" >&2; return 1; }
    apt-get update -q >/dev/null
    for pkg in "${need[@]}"; do
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >/dev/null
    done
}

# Names follow the lab convention rl<pid>x<n>- so `Lab::cleanup_stale()`
# removes them if this script is killed before its trap runs.
P="rl$$x0-"
NS_A="${P}bench-a"
NS_B="${P}bench-b"
ADDR_A=192.0.2.1
ADDR_B=192.0.2.2
WORK="$(mktemp -d /tmp/ringlan-bench.XXXXXX)"
PIDS=()
CLK_TCK="$(getconf CLK_TCK)"

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Background jobs use `ip netns exec` directly (not these functions) so that
# $! is the pid of the program itself: `ip netns exec` execs it.
in_a() { ip netns exec "$NS_A" "$@"; }
in_b() { ip netns exec "$NS_B" "$@"; }

# wait_until SECONDS CMD...: poll CMD every 0.1 s.
wait_until() {
    local limit=$(( $1 * 10 )); shift
    local i
    for ((i = 0; i < limit; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

# --- CPU / RSS sampling helpers ---------------------------------------------
# cpu_ticks PID...: utime + stime summed over the pids (fields 14 and 15 of
# /proc/PID/stat; the comm field may hold spaces, so split after the last ')').
cpu_ticks() {
    local p s=0 t
    for p in "$@"; do
        t="$(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')"
        s=$(( s + t ))
    done
    echo "$s"
}
# peak_rss_mib PID...: the largest VmHWM (peak RSS) of the pids, MiB.
peak_rss_mib() {
    local p m=0 v
    for p in "$@"; do
        v="$(awk '$1 == "VmHWM:" {print $2}' "/proc/$p/status")"
        [ "$v" -gt "$m" ] && m="$v"
    done
    awk -v k="$m" 'BEGIN {printf "%.1f", k / 1024}'
}

# listening ADDR: an iperf3 server listens on ADDR:5201 in B.
listening() { in_b ss -Hltn "src $1:5201" | grep -q 5201; }

# --- topology ---------------------------------------------------------------
setup() {
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    ip link add veth0 netns "$NS_A" type veth peer name veth0 netns "$NS_B"
    in_a ip link set lo up
    in_b ip link set lo up
    in_a ip addr add "$ADDR_A/24" dev veth0
    in_b ip addr add "$ADDR_B/24" dev veth0
    in_a ip link set veth0 up
    in_b ip link set veth0 up
    wait_until 10 in_a ping -c1 -W1 "$ADDR_B"
    # Underlay loss: one rule per host, on everything arriving at the veth.
    for ns in "$NS_A" "$NS_B"; do
        ip netns exec "$ns" nft -f - <<'NFT'
table inet rl_loss {
    chain input {
        type filter hook input priority -300;
    }
}
NFT
    done
}

# set_loss PERCENT: drop that share of every packet arriving at either host.
# The drop must hit wire-size packets: with the veth's segmentation offloads
# on, a TCP (TSO) or UDP (GSO) super-packet of up to 64 KiB crosses the veth
# in one piece and one drop would lose 40 or more packets at once, which no
# real path does (a NIC segments before the wire). So while a loss rate is
# set, the veths segment in software before sending (tso, gso and
# tx-udp-segmentation off: every system, raw included, then loses single
# packets); at 0% the offloads are on as on a fast local path.
set_loss() {
    local per100k ns onoff=on
    per100k="$(awk -v p="$1" 'BEGIN {printf "%d", p * 1000}')"
    [ "$per100k" -gt 0 ] && onoff=off
    for ns in "$NS_A" "$NS_B"; do
        ip netns exec "$ns" ethtool -K veth0 tso "$onoff" gso "$onoff" tx-udp-segmentation "$onoff"
        ip netns exec "$ns" nft flush chain inet rl_loss input
        if [ "$per100k" -gt 0 ]; then
            ip netns exec "$ns" nft add rule inet rl_loss input iifname veth0 numgen random mod 100000 "<" "$per100k" drop
        fi
    done
}

# --- Nebula -----------------------------------------------------------------
NEB_A="" NEB_B=""
start_nebula() {
    local d="$WORK/nebula" n addr overlay peer_overlay peer_addr
    mkdir -p "$d"
    (cd "$d" && nebula-cert ca -name bench -out-crt ca.crt -out-key ca.key >/dev/null)
    for n in a b; do
        if [ "$n" = a ]; then
            addr="$ADDR_A"; overlay=10.79.0.1; peer_overlay=10.79.0.2; peer_addr="$ADDR_B"
        else
            addr="$ADDR_B"; overlay=10.79.0.2; peer_overlay=10.79.0.1; peer_addr="$ADDR_A"
        fi
        (cd "$d" && nebula-cert sign -ca-crt ca.crt -ca-key ca.key -name "$n" -ip "$overlay/24" \
            -out-crt "$n.crt" -out-key "$n.key" >/dev/null)
        cat >"$d/$n.yaml" <<YAML
pki: {ca: $d/ca.crt, cert: $d/$n.crt, key: $d/$n.key}
static_host_map: {"$peer_overlay": ["$peer_addr:4242"]}
lighthouse: {am_lighthouse: false}
listen: {host: $addr, port: 4242}
punchy: {punch: false}
tun: {dev: nebula0, mtu: 1300}
logging: {level: info}
firewall:
  outbound: [{port: any, proto: any, host: any}]
  inbound: [{port: any, proto: any, host: any}]
YAML
    done
    ip netns exec "$NS_B" nebula -config "$d/b.yaml" >"$WORK/nebula-b.log" 2>&1 &
    NEB_B=$!
    PIDS+=("$NEB_B")
    ip netns exec "$NS_A" nebula -config "$d/a.yaml" >"$WORK/nebula-a.log" 2>&1 &
    NEB_A=$!
    PIDS+=("$NEB_A")
    if ! wait_until 30 in_a ping -c1 -W1 10.79.0.2; then
        echo "bench: nebula did not connect; logs:" >&2
        tail -n 20 "$WORK"/nebula-*.log >&2
        return 1
    fi
}

# --- wireguard-go -----------------------------------------------------------
WG_A="" WG_B=""
start_wireguard() {
    # Two names: the UAPI socket (/var/run/wireguard/NAME.sock) is not
    # per network namespace.
    local d="$WORK/wg" n
    mkdir -p "$d"
    for n in a b; do
        (umask 077 && wg genkey >"$d/$n.key")
        wg pubkey <"$d/$n.key" >"$d/$n.pub"
    done
    ip netns exec "$NS_A" env WG_PROCESS_FOREGROUND=1 wireguard-go -f wga >"$WORK/wg-a.log" 2>&1 &
    WG_A=$!
    PIDS+=("$WG_A")
    ip netns exec "$NS_B" env WG_PROCESS_FOREGROUND=1 wireguard-go -f wgb >"$WORK/wg-b.log" 2>&1 &
    WG_B=$!
    PIDS+=("$WG_B")
    wait_until 10 in_a ip link show wga && wait_until 10 in_b ip link show wgb \
        || { echo "bench: wireguard-go made no interface" >&2; cat "$WORK"/wg-*.log >&2; return 1; }
    in_a wg set wga private-key "$d/a.key" listen-port 51820 \
        peer "$(cat "$d/b.pub")" endpoint "$ADDR_B:51820" allowed-ips 10.80.0.2/32
    in_b wg set wgb private-key "$d/b.key" listen-port 51820 \
        peer "$(cat "$d/a.pub")" endpoint "$ADDR_A:51820" allowed-ips 10.80.0.1/32
    in_a ip addr add 10.80.0.1/24 dev wga
    in_b ip addr add 10.80.0.2/24 dev wgb
    in_a ip link set wga up
    in_b ip link set wgb up
    if ! wait_until 30 in_a ping -c1 -W1 10.80.0.2; then
        echo "bench: wireguard-go did not connect; logs:" >&2
        tail -n 20 "$WORK"/wg-*.log >&2
        return 1
    fi
}

# --- tinc 1.0, Mode = switch ------------------------------------------------
TINC_A="" TINC_B=""
start_tinc() {
    local n addr overlay
    for n in a b; do
        local d="$WORK/tinc/$n"
        mkdir -p "$d/hosts"
        if [ "$n" = a ]; then addr="$ADDR_A"; overlay=10.78.0.1; else addr="$ADDR_B"; overlay=10.78.0.2; fi
        {
            echo "Name = $n"
            echo "Mode = switch"
            echo "DeviceType = tap"
            echo "Interface = tinc0"
            echo "AddressFamily = ipv4"
            echo "BindToAddress = $addr"
            [ "$n" = a ] && echo "ConnectTo = b"
        } >"$d/tinc.conf"
        printf 'Address = %s\nPort = 655\n' "$addr" >"$d/hosts/$n"
        printf '#!/bin/sh\nip link set "$INTERFACE" up\nip addr add %s/24 dev "$INTERFACE"\n' "$overlay" >"$d/tinc-up"
        chmod +x "$d/tinc-up"
        tincd -c "$d" -K 2048 </dev/null >"$WORK/tinc-keygen-$n.log" 2>&1
    done
    cp "$WORK/tinc/a/hosts/a" "$WORK/tinc/b/hosts/a"
    cp "$WORK/tinc/b/hosts/b" "$WORK/tinc/a/hosts/b"
    ip netns exec "$NS_B" tincd -c "$WORK/tinc/b" -D --pidfile="$WORK/tinc-b.pid" --logfile="$WORK/tinc-b.log" &
    TINC_B=$!
    PIDS+=("$TINC_B")
    ip netns exec "$NS_A" tincd -c "$WORK/tinc/a" -D --pidfile="$WORK/tinc-a.pid" --logfile="$WORK/tinc-a.log" &
    TINC_A=$!
    PIDS+=("$TINC_A")
    if ! wait_until 30 in_a ping -c1 -W1 10.78.0.2; then
        echo "bench: tinc did not connect; logs:" >&2
        tail -n 20 "$WORK"/tinc-*.log >&2
        return 1
    fi
}

# --- ringlan ----------------------------------------------------------------
# build_ringlan: `cargo build --release -p ringlan-agent` when the binary is
# missing or older than any source it is built from.
build_ringlan() {
    [ "$BUILD_RINGLAN" = 1 ] || return 0
    local why=""
    if [ ! -x "$RINGLAN_BIN" ]; then
        why="$RINGLAN_BIN does not exist"
    elif [ -n "$(find "$repo/agent" "$repo/overlay" "$repo/tunnel" "$repo/Cargo.toml" "$repo/Cargo.lock" \
            \( -name target -o -name fuzz \) -prune -o \
            \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -newer "$RINGLAN_BIN" -print -quit)" ]; then
        why="$RINGLAN_BIN is older than its sources"
    fi
    [ -n "$why" ] || return 0
    echo "bench: $why; building it (cargo build --release -p ringlan-agent; minutes on 2 cores)"
    command -v cargo >/dev/null || { echo "bench: cargo not found; set RINGLAN_BIN" >&2; return 1; }
    (cd "$repo" && cargo build --release -p ringlan-agent)
}

# ringlan_open SOCKET: the agent behind SOCKET reports an open session.
ringlan_open() {
    "$RINGLAN_BIN" status --socket "$1" --json 2>/dev/null \
        | grep -Eq '"state"[[:space:]]*:[[:space:]]*"open"'
}

# ringlan_config DIR NETWORK N ROLE OVERLAY INTRODUCERS IFNAME: write
# DIR/N.yaml for node NETWORK-N of network NETWORK (secret
# DIR/NETWORK.secret, key DIR/N.key, control socket DIR/N.sock; the config
# follows docs/design.md, "Config") and check it.
ringlan_config() {
    local d="$1" net="$2" n="$3" role="$4" overlay="$5" intro="$6" ifname="$7"
    cat >"$d/$n.yaml" <<YAML
network:
  name: $net
  secret_file: $d/$net.secret
node:
  name: $net-$n
  key_file: $d/$n.key
interface:
  name: $ifname
  mtu: 1400
  mac: auto
  addresses: [$overlay/24]
listen:
  port: 4910
introducers: $intro
role: $role
control:
  socket: $d/$n.sock
log:
  level: info
YAML
    if [ -n "${BENCH_RINGLAN_IO_THREADS:-}" ]; then
        echo "io_threads: $BENCH_RINGLAN_IO_THREADS" >>"$d/$n.yaml"
    fi
    "$RINGLAN_BIN" check-config "$d/$n.yaml" >/dev/null
}

declare -A FLOOR_PIDS FLOOR_DST
build_floor() {
    wants floor || wants floor-aes || wants floor-ack || return 0
    [ -z "${FLOOR_BIN:-}" ] || return 0
    FLOOR_BIN="$repo/target/release/examples/tap_floor"
    echo "bench: building the floor (cargo build --release -p ringlan-agent --example tap_floor)"
    command -v cargo >/dev/null || { echo "bench: cargo not found; set FLOOR_BIN" >&2; return 1; }
    (cd "$repo" && cargo build --release -p ringlan-agent --example tap_floor)
}

# start_floor NAME NET PORT [OPTION...]: tap_floor in both namespaces, the
# TAPs (rl-fNET) at 10.NET.0.1 and .2; FLOOR_DST[NAME] is B's address and
# FLOOR_PIDS[NAME] holds both pids.
start_floor() {
    local name="$1" net="$2" port="$3" a b
    shift 3
    ip netns exec "$NS_B" "$FLOOR_BIN" --tap "rl-f$net" --addr "10.$net.0.2/24" \
        --local "$ADDR_B:$port" --peer "$ADDR_A:$port" "$@" >"$WORK/$name-b.log" 2>&1 &
    b=$!
    PIDS+=("$b")
    ip netns exec "$NS_A" "$FLOOR_BIN" --tap "rl-f$net" --addr "10.$net.0.1/24" \
        --local "$ADDR_A:$port" --peer "$ADDR_B:$port" "$@" >"$WORK/$name-a.log" 2>&1 &
    a=$!
    PIDS+=("$a")
    if ! wait_until 30 in_a ping -c1 -W1 "10.$net.0.2"; then
        echo "bench: $name did not connect; logs:" >&2
        tail -n 20 "$WORK/$name"-*.log >&2
        return 1
    fi
    FLOOR_PIDS[$name]="$a $b"
    FLOOR_DST[$name]="10.$net.0.2"
}

# Two agents on the same veth: A is the introducer (with a TAP like any
# node), B joins it. Overlay addresses 10.77.0.1/.2.
RL_A="" RL_B=""
start_ringlan() {
    local d="$WORK/ringlan"
    mkdir -p "$d"
    (umask 077 && "$RINGLAN_BIN" secret >"$d/bench.secret")
    ringlan_config "$d" bench a introducer 10.77.0.1 "[]" rl-bench
    ringlan_config "$d" bench b node 10.77.0.2 "[$ADDR_A:4910]" rl-bench
    ip netns exec "$NS_A" "$RINGLAN_BIN" up -c "$d/a.yaml" >"$WORK/ringlan-a.log" 2>&1 &
    RL_A=$!
    PIDS+=("$RL_A")
    ip netns exec "$NS_B" "$RINGLAN_BIN" up -c "$d/b.yaml" >"$WORK/ringlan-b.log" 2>&1 &
    RL_B=$!
    PIDS+=("$RL_B")
    if ! wait_until 30 ringlan_open "$d/a.sock" || ! wait_until 30 ringlan_open "$d/b.sock" \
        || ! wait_until 30 in_a ping -c1 -W1 10.77.0.2; then
        echo "bench: ringlan did not connect; logs:" >&2
        tail -n 20 "$WORK"/ringlan-*.log >&2
        return 1
    fi
}

# --- measurement ------------------------------------------------------------
# Results keyed "system,loss,round".
declare -A G1 G4 RTT0 RTTL CPUGB RSS RETR

# ping_avg ARGS...: average RTT in ms of `ping -n -q ARGS` from A ("" if none came back).
ping_avg() { in_a ping -n -q "$@" 2>/dev/null | awk -F/ '/^rtt/ {print $5}' || true; }

# iperf NAME DST ARGS...: one iperf3 client run A -> DST (server in B) with
# JSON output into $WORK/NAME.json.
iperf() {
    local name="$1" dst="$2"; shift 2
    ip netns exec "$NS_B" iperf3 -s -1 -B "$dst" >"$WORK/$name-server.log" 2>&1 &
    local srv=$!
    PIDS+=("$srv")
    # Probe the listener with ss: a test connection would use up `-1`.
    wait_until 10 listening "$dst" \
        || { echo "bench: iperf3 server on $dst not reachable" >&2; return 1; }
    if ! in_a iperf3 -c "$dst" -t "$SECS" -C "$TCP_CC" -J "$@" >"$WORK/$name.json" 2>&1; then
        echo "bench: iperf3 $name failed:" >&2
        jq -r '.error // empty' "$WORK/$name.json" >&2 || cat "$WORK/$name.json" >&2
        return 1
    fi
    wait "$srv" 2>/dev/null || true
}

# measure SYSTEM ROUND LOSS DST [DAEMON_PID...]: idle RTT, then one TCP
# stream with pings alongside (RTT under load) while the daemons' CPU is
# counted, then four streams.
measure() {
    local sys="$1" round="$2" loss="$3" dst="$4"; shift 4
    local key="$sys,$loss,$round" pids=("$@") name="$sys-$loss-$round"
    RTT0[$key]="$(ping_avg -c "$PINGS" -i 0.05 "$dst")"
    local before=0 after=0
    [ "${#pids[@]}" -gt 0 ] && before="$(cpu_ticks "${pids[@]}")"
    ip netns exec "$NS_A" ping -n -q -i 0.1 -w "$SECS" "$dst" >"$WORK/$name-load-ping.log" 2>&1 &
    local pinger=$!
    PIDS+=("$pinger")
    iperf "$name-1" "$dst"
    [ "${#pids[@]}" -gt 0 ] && after="$(cpu_ticks "${pids[@]}")"
    wait "$pinger" 2>/dev/null || true
    RTTL[$key]="$(awk -F/ '/^rtt/ {print $5}' "$WORK/$name-load-ping.log")"
    local j="$WORK/$name-1.json"
    G1[$key]="$(jq -r '.end.sum_received.bits_per_second / 1e9' "$j")"
    RETR[$key]="$(jq -r '.end.sum_sent.retransmits // "-"' "$j")"
    if [ "${#pids[@]}" -gt 0 ]; then
        CPUGB[$key]="$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v b="$(jq -r '.end.sum_received.bytes' "$j")" \
            'BEGIN {if (b > 0) printf "%.2f", t / hz / (b / 1e9)}')"
        RSS[$key]="$(peak_rss_mib "${pids[@]}")"
    fi
    iperf "$name-4" "$dst" -P 4
    G4[$key]="$(jq -r '.end.sum_received.bits_per_second / 1e9' "$WORK/$name-4.json")"
    printf 'round %s loss %-4s %-13s %7.3f Gbit/s  4 streams %7.3f  rtt idle %s ms, loaded %s ms  tcp retr %s  cpu %s s/GB  peak rss %s MiB\n' \
        "$round" "$loss%" "$sys" "${G1[$key]}" "${G4[$key]}" "${RTT0[$key]:--}" "${RTTL[$key]:--}" \
        "${RETR[$key]}" "${CPUGB[$key]:--}" "${RSS[$key]:--}"
}

# --- report -----------------------------------------------------------------
# stats ARRAY SYSTEM LOSS: "median min max" over the rounds ("" if none).
stats() {
    local -n arr="$1"
    local r v vals=()
    for ((r = 1; r <= ROUNDS; r++)); do
        v="${arr[$2,$3,$r]:-}"
        [ -n "$v" ] && vals+=("$v")
    done
    [ "${#vals[@]}" -gt 0 ] || return 0
    printf '%s\n' "${vals[@]}" | sort -g | awk '{v[NR] = $1} END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%g %g %g\n", m, v[1], v[NR]}'
}
median() { stats "$@" | awk '{print $1}'; }
# cell ARRAY SYSTEM LOSS: "median [min-max]" or "-".
cell() {
    local s
    s="$(stats "$@")"
    [ -n "$s" ] || { echo "-"; return; }
    awk -v s="$s" 'BEGIN {split(s, a, " "); printf "%.3g [%.3g-%.3g]", a[1], a[2], a[3]}'
}
# ratio X Y: X / Y with two decimals, "-" when either is missing.
ratio() { awk -v x="$1" -v y="$2" 'BEGIN {if (x == "" || y == "" || y + 0 == 0) print "-"; else printf "%.2f", x / y}'; }
# check LABEL OK(0/1) TEXT
check() { printf '  %-4s %-44s %s\n' "$([ "$2" = 1 ] && echo met || echo NOT)" "$1" "$3"; }
ge() { awk -v x="$1" -v y="$2" 'BEGIN {print (x != "" && y != "" && x + 0 >= y + 0) ? 1 : 0}'; }

# best_peer LOSS: the peer with the highest median single-stream throughput.
best_peer() {
    local p m best="" bm=0
    for p in "${PEERS[@]}"; do
        wants "$p" || continue
        m="$(median G1 "$p" "$1")"
        [ -n "$m" ] || continue
        if [ -z "$best" ] || [ "$(ge "$m" "$bm")" = 1 ]; then best="$p"; bm="$m"; fi
    done
    echo "$best"
}

report() {
    echo
    echo "==== ringlan bench: $ROUNDS round(s) of ${SECS} s iperf3, $(nproc) cores, $(uname -r), TCP $TCP_CC"
    echo "ringlan: $RINGLAN_BIN ($("$RINGLAN_BIN" --version 2>/dev/null || echo '?')), io_threads ${BENCH_RINGLAN_IO_THREADS:-auto}"
    echo "cells: median [min-max] over the rounds; cpu: both daemons' CPU seconds per GB received"
    echo "(single stream); rss: the larger peak RSS of the two daemons"
    local loss sys best raw1
    for loss in $LOSSES; do
        best="$(best_peer "$loss")"
        raw1="$(median G1 raw "$loss")"
        echo
        echo "-- underlay loss $loss% (best peer: ${best:-none})"
        printf '%-13s %-22s %-22s %-20s %-20s %-18s %-10s %9s %7s\n' system "1 stream Gbit/s" "4 streams Gbit/s" \
            "rtt idle ms" "rtt loaded ms" "cpu s/GB" "rss MiB" "vs best" "vs raw"
        for sys in $SYSTEMS; do
            [ -n "$(stats G1 "$sys" "$loss")" ] || continue
            printf '%-13s %-22s %-22s %-20s %-20s %-18s %-10s %9s %7s\n' "$sys" "$(cell G1 "$sys" "$loss")" \
                "$(cell G4 "$sys" "$loss")" "$(cell RTT0 "$sys" "$loss")" "$(cell RTTL "$sys" "$loss")" \
                "$(cell CPUGB "$sys" "$loss")" "$(median RSS "$sys" "$loss")" \
                "$( [ -n "$best" ] && ratio "$(median G1 "$sys" "$loss")" "$(median G1 "$best" "$loss")" || echo -)" \
                "$(ratio "$(median G1 "$sys" "$loss")" "$raw1")"
        done
    done
    wants ringlan || return 0
    echo
    echo "-- ringlan against the speed issue's targets (medians of this run)"
    local s m mn b r cpu i0 il ri
    if [ -n "$(stats G1 ringlan 0)" ]; then
        read -r m mn _ <<<"$(stats G1 ringlan 0)"
        b="$(best_peer 0)"; r="$(median G1 raw 0)"
        cpu="$(median CPUGB ringlan 0)"
        check "daemons' CPU <= 2 s per GB" "$(ge 2 "$cpu")" "$cpu s/GB"
        [ -n "$b" ] && check "single stream >= 6x the best peer" "$(ge "$(ratio "$m" "$(median G1 "$b" 0)")" 6)" "$(ratio "$m" "$(median G1 "$b" 0)")x $b"
        [ -n "$r" ] && check "single stream >= 0.3x raw veth" "$(ge "$(ratio "$m" "$r")" 0.3)" "$(ratio "$m" "$r")x"
        check "slowest round >= 0.8x the median" "$(ge "$(ratio "$mn" "$m")" 0.8)" "$(ratio "$mn" "$m")x"
        i0="$(median RTT0 ringlan 0)"; il="$(median RTTL ringlan 0)"; ri="$(median RTT0 raw 0)"
        [ -n "$ri" ] && check "idle RTT <= raw + 0.1 ms" "$(ge "$(awk -v r="$ri" 'BEGIN {print r + 0.1}')" "$i0")" "$i0 ms vs raw $ri ms"
        check "RTT under load <= idle + 1 ms" "$(ge "$(awk -v r="$i0" 'BEGIN {print r + 1}')" "$il")" "$(printf "%.3g" "$il") ms vs idle $(printf "%.3g" "$i0") ms"
    fi
    for s in 0.1:5 1:3; do
        local l="${s%%:*}" want="${s#*:}"
        [[ " $LOSSES " == *" $l "* ]] || continue
        b="$(best_peer "$l")"
        [ -n "$b" ] || continue
        r="$(ratio "$(median G1 ringlan "$l")" "$(median G1 "$b" "$l")")"
        check "at $l% loss >= ${want}x the best peer" "$(ge "$r" "$want")" "${r}x $b"
    done
    echo "  (relayed >= 0.9x direct: tests/bench/relay.sh)"
}

# Sourced (tests/bench/profile.sh): the functions above, nothing run.
[[ "${BASH_SOURCE[0]}" != "$0" ]] && return 0

install_missing
build_ringlan
build_floor
setup
wants tinc && start_tinc
wants nebula && start_nebula
wants wireguard-go && start_wireguard
wants ringlan && start_ringlan
wants floor && start_floor floor 75 4920
wants floor-aes && start_floor floor-aes 76 4921 --seal
wants floor-ack && start_floor floor-ack 74 4922 --seal --ack "${FLOOR_ACK_EVERY:-16}"
for ((round = 1; round <= ROUNDS; round++)); do
    for loss in $LOSSES; do
        set_loss "$loss"
        for sys in $SYSTEMS; do
            case "$sys" in
            raw) measure raw "$round" "$loss" "$ADDR_B" ;;
            tinc) measure tinc "$round" "$loss" 10.78.0.2 "$TINC_A" "$TINC_B" ;;
            nebula) measure nebula "$round" "$loss" 10.79.0.2 "$NEB_A" "$NEB_B" ;;
            wireguard-go) measure wireguard-go "$round" "$loss" 10.80.0.2 "$WG_A" "$WG_B" ;;
            ringlan) measure ringlan "$round" "$loss" 10.77.0.2 "$RL_A" "$RL_B" ;;
            # shellcheck disable=SC2086 # two pids
            floor | floor-aes | floor-ack) measure "$sys" "$round" "$loss" "${FLOOR_DST[$sys]}" ${FLOOR_PIDS[$sys]} ;;
            *) echo "bench: unknown system $sys (BENCH_SYSTEMS)" >&2; exit 1 ;;
            esac
        done
    done
done
set_loss 0
report
