#!/usr/bin/env bash
# ringlan benchmark: two network namespaces joined by a veth pair;
# single-stream TCP throughput (iperf3) and ping RTT over
#   1. the raw veth,
#   2. tinc 1.0 in `Mode = switch` (L2, the closest peer to ringlan),
#   3. ringlan (target/release/ringlan, built first if missing or stale),
# with the VPN agents' CPU and peak RSS sampled from /proc during iperf3.
# Both VPNs run side by side; each round measures raw, tinc, ringlan in turn
# so all three see similar load from whatever else shares the machine.
# Usage (root): tests/bench/run.sh   Environment: BENCH_SECONDS (default 10),
# BENCH_PINGS (default 20), BENCH_ROUNDS (default 1), RINGLAN_BIN (default
# target/release/ringlan; when set, it is used as is, never built).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECS="${BENCH_SECONDS:-10}"
PINGS="${BENCH_PINGS:-20}"
ROUNDS="${BENCH_ROUNDS:-1}"
BUILD_RINGLAN=0
if [ -z "${RINGLAN_BIN:-}" ]; then
    RINGLAN_BIN="$repo/target/release/ringlan"
    BUILD_RINGLAN=1
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "bench: needs root (network namespaces); run: sudo $0" >&2
    exit 1
fi
for t in ip iperf3 ping tincd; do
    command -v "$t" >/dev/null || { echo "bench: missing $t (apt-get install iproute2 iperf3 iputils-ping tinc)" >&2; exit 1; }
done

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
# cpu_ticks PID: utime + stime (fields 14 and 15 of /proc/PID/stat; the comm
# field may hold spaces, so split after the last ')').
cpu_ticks() {
    local rest
    rest="$(sed 's/.*) //' "/proc/$1/stat")"
    # after ')': field 3 is state, so utime/stime are the 12th/13th words
    awk '{print $12 + $13}' <<<"$rest"
}
# runq_ns PID: nanoseconds PID spent runnable but waiting for a CPU
# (second field of /proc/PID/schedstat, summed over its threads).
runq_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {print s + 0}'; }
# rss_kb PID [FIELD]: VmRSS (or VmHWM, the peak) in kB from /proc/PID/status.
rss_kb() { awk -v f="${2:-VmRSS}:" '$1 == f {print $2}' "/proc/$1/status"; }
# cpu_percent TICKS_BEFORE TICKS_AFTER SECONDS: share of one core.
cpu_percent() { awk -v a="$1" -v b="$2" -v s="$3" -v hz="$CLK_TCK" 'BEGIN {printf "%.0f", (b - a) / hz / s * 100}'; }

# listening ADDR: an iperf3 server listens on ADDR:5201 in B.
listening() { in_b ss -Hltn "src $1:5201" | grep -q 5201; }

# --- measurement ------------------------------------------------------------
# Results keyed "path,round".
declare -A GBPS RTT CPU RSS LOAD RETR RUNQ

# measure NAME ROUND DST_ADDR [AGENT_PID...]: iperf3 from A to DST_ADDR
# (server in B), then ping; samples the given agent pids during iperf3.
measure() {
    local name="$1" round="$2" dst="$3"; shift 3
    local key="$name,$round" agents=("$@") before=() wait0=() p i
    LOAD[$key]="$(awk '{print $1}' /proc/loadavg)"
    ip netns exec "$NS_B" iperf3 -s -1 -B "$dst" >"$WORK/iperf3-server-$name-$round.log" 2>&1 &
    local srv=$!
    PIDS+=("$srv")
    # Probe the listener with ss: a test connection would use up `-1`.
    wait_until 10 listening "$dst" \
        || { echo "bench: iperf3 server on $dst not reachable" >&2; return 1; }
    for p in "${agents[@]}"; do before+=("$(cpu_ticks "$p")"); wait0+=("$(runq_ns "$p")"); done
    local t0 t1
    t0="$(date +%s.%N)"
    in_a iperf3 -c "$dst" -t "$SECS" -f m >"$WORK/iperf3-$name-$round.log" 2>&1 \
        || { cat "$WORK/iperf3-$name-$round.log" >&2; return 1; }
    t1="$(date +%s.%N)"
    local secs cpu="" rss="" runq=""
    secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')"
    for i in "${!agents[@]}"; do
        p="${agents[$i]}"
        cpu+="${cpu:+/}$(cpu_percent "${before[$i]}" "$(cpu_ticks "$p")" "$secs")%"
        rss+="${rss:+/}$(( $(rss_kb "$p" VmHWM) / 1024 ))MiB"
        runq+="${runq:+/}$(awk -v a="${wait0[$i]}" -v b="$(runq_ns "$p")" -v s="$secs" 'BEGIN {printf "%.0f", (b - a) / 1e9 / s * 100}')%"
    done
    wait "$srv" 2>/dev/null || true
    local mbps
    mbps="$(awk '/receiver/ {v = $(NF-2)} END {print v}' "$WORK/iperf3-$name-$round.log")"
    GBPS[$key]="$(awk -v m="$mbps" 'BEGIN {printf "%.3f", m / 1000}')"
    # TCP retransmissions of the sender (loss inside the path).
    RETR[$key]="$(awk '/sender/ {v = $(NF-1)} END {print v}' "$WORK/iperf3-$name-$round.log")"
    RTT[$key]="$(in_a ping -n -q -c "$PINGS" -i 0.05 "$dst" | awk -F'[/ ]' '/^rtt/ {print $8}')"
    CPU[$key]="${cpu:--}"
    RUNQ[$key]="${runq:--}"
    RSS[$key]="${rss:--}"
    printf 'round %s  %-8s %8s Gbit/s   rtt %s ms   tcp retr %s   agent cpu %s (waiting for a cpu %s)   agent peak rss %s   load %s\n' \
        "$round" "$name" "${GBPS[$key]}" "${RTT[$key]}" "${RETR[$key]}" "${CPU[$key]}" "${RUNQ[$key]}" "${RSS[$key]}" "${LOAD[$key]}"
}

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

# ringlan_tx SOCKET: "frames bytes" the agent behind SOCKET sent on all
# sessions ("0 0" without jq).
ringlan_tx() {
    if command -v jq >/dev/null; then
        "$RINGLAN_BIN" status --socket "$1" --json 2>/dev/null \
            | jq -r '"\([.sessions[].tx.frames] | add // 0) \([.sessions[].tx.bytes] | add // 0)"' \
            || echo "0 0"
    else
        echo "0 0"
    fi
}

# Two agents on the same veth: A is the introducer (with a TAP like any
# node), B joins it; the config follows docs/design.md ("Config"). Overlay
# addresses 10.77.0.1/.2.
RL_A="" RL_B=""
start_ringlan() {
    local d="$WORK/ringlan" n role addr overlay intro
    mkdir -p "$d"
    (umask 077 && "$RINGLAN_BIN" secret >"$d/bench.secret")
    for n in a b; do
        if [ "$n" = a ]; then
            role=introducer; addr="$ADDR_A"; overlay=10.77.0.1; intro="[]"
        else
            role=node; addr="$ADDR_B"; overlay=10.77.0.2; intro="[$ADDR_A:4910]"
        fi
        cat >"$d/$n.yaml" <<YAML
network:
  name: bench
  secret_file: $d/bench.secret
node:
  name: bench-$n
  key_file: $d/$n.key
interface:
  name: rl-bench
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
        "$RINGLAN_BIN" check-config "$d/$n.yaml" >/dev/null
    done
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

# ratio X Y: X / Y with three decimals, "-" when either is missing.
ratio() { awk -v x="$1" -v y="$2" 'BEGIN {if (x == "" || y == "" || y + 0 == 0) print "-"; else printf "%.3f", x / y}'; }

report() {
    echo
    echo "==== ringlan bench: ${SECS} s single TCP stream, ${PINGS} pings, $(nproc) cores, $(uname -r), ${ROUNDS} round(s)"
    echo "ringlan: $RINGLAN_BIN ($("$RINGLAN_BIN" --version 2>/dev/null || echo '?'))"
    printf '%-5s %-8s %9s %8s %7s %9s %8s %14s %16s\n' round path Gbit/s rtt_ms load "vs raw" tcp_retr "agent cpu" "agent peak rss"
    local r n
    for ((r = 1; r <= ROUNDS; r++)); do
        for n in raw tinc ringlan; do
            [ -n "${GBPS[$n,$r]:-}" ] || continue
            printf '%-5s %-8s %9s %8s %7s %9s %8s %14s %16s\n' "$r" "$n" "${GBPS[$n,$r]}" "${RTT[$n,$r]}" \
                "${LOAD[$n,$r]}" "$(ratio "${GBPS[$n,$r]}" "${GBPS[raw,$r]}")" "${RETR[$n,$r]}" "${CPU[$n,$r]}" "${RSS[$n,$r]}"
        done
        printf '      ringlan/tinc throughput %s  rtt %s   ringlan/raw throughput %s  rtt %s\n' \
            "$(ratio "${GBPS[ringlan,$r]:-}" "${GBPS[tinc,$r]:-}")" "$(ratio "${RTT[ringlan,$r]:-}" "${RTT[tinc,$r]:-}")" \
            "$(ratio "${GBPS[ringlan,$r]:-}" "${GBPS[raw,$r]:-}")" "$(ratio "${RTT[ringlan,$r]:-}" "${RTT[raw,$r]:-}")"
    done
    echo "(agent cpu: share of one core per agent, A/B, during iperf3; load: 1-minute load average at the start;"
    echo " per-round lines above also show how long each agent was runnable but waiting for a CPU)"
}

build_ringlan
setup
start_tinc
start_ringlan
for ((round = 1; round <= ROUNDS; round++)); do
    measure raw "$round" "$ADDR_B"
    measure tinc "$round" 10.78.0.2 "$TINC_A" "$TINC_B"
    before="$(ringlan_tx "$WORK/ringlan/a.sock")"
    measure ringlan "$round" 10.77.0.2 "$RL_A" "$RL_B"
    after="$(ringlan_tx "$WORK/ringlan/a.sock")"
    # Frames A sent during iperf3 and ping; more than the MTU on average
    # means TCP super-frames (TSO through the TAP's virtio header).
    awk -v b="$before" -v a="$after" 'BEGIN {split(b, x); split(a, y); f = y[1] - x[1];
        if (f > 0) printf "              ringlan A->B: %d frames, %.0f bytes per frame\n", f, (y[2] - x[2]) / f}'
done
report
