#!/usr/bin/env bash
# ringlan fairness bench (printed, not asserted): do two ringlan sessions,
# each carrying one TCP stream, and one plain TCP stream get comparable
# shares of a congested link?
#
# The lab, made here and removed on exit (namespaces named rl<pid>x0-fair-*,
# no route out of the lab, nothing bridged to a real interface):
#
#   s1 ---\                                        /--- r1   ringlan pair 1
#   s2 ----- ra ====== tbf R, queue L ======> rb ----- r2   ringlan pair 2
#   s3 ---/        (the only shared link)          \--- r3   plain TCP
#
#   sK eth0 198.18.K.2/24 -- ra sK 198.18.K.1/24
#   rK eth0 198.19.K.2/24 -- rb rK 198.19.K.1/24
#   ra bn 198.18.255.1/30 -- rb bn 198.18.255.2/30 (the bottleneck)
#
# Two routers (ra, rb) joined by one veth; its ra end has
# `tc qdisc add dev bn root tbf rate R burst B latency L`, so everything
# from the senders to the receivers queues and is dropped in that one tbf
# (the reverse direction, acknowledgements, is not limited). Pair 1 and
# pair 2 are two separate ringlan networks (own secret, introducer in sK,
# node in rK, overlay 10.77.K.0/24): two sessions with their own
# congestion controllers, and no third session (a four-member network
# would also open sessions between the members of different pairs and make
# the traffic depend on the overlay's topology). Pair 3 is iperf3 straight
# over the underlay.
#
# nftables counters on both routers' forward chains, one per pair
# (ip saddr sK, daddr rK: ringlan's UDP or the plain TCP), give the bytes
# each flow offered to the bottleneck (ra) and the bytes that crossed it
# (rb), so the shares are also measured on the wire, headers and ringlan's
# per-packet overhead included, not only as goodput. The senders' veths
# segment in software (tso, gso, tx-udp-segmentation off), so the routers
# count and the tbf drops single wire packets, not 64 KiB super-packets.
#
# Per round and configuration: each flow alone (the capacity it reaches
# through the bottleneck by itself), then all three at once; each for
# FAIR_SECONDS after FAIR_OMIT seconds of warm-up (iperf3 -O; the counters
# are read over the same seconds). The report gives per flow the median
# [min-max] over the rounds of goodput (iperf3 -J, receiver side), its
# share of the rate, the bottleneck bytes and their share, the flow's loss
# at the bottleneck, the sender's TCP retransmissions and mean RTT (for
# ringlan the inner TCP's), ringlan's session counters (frame loss,
# breaker trips, queue-full drops, window), and over the three flows
# Jain's fairness index and max/min.
#
# Usage (root): tests/bench/fairness.sh
# Environment: FAIR_RATE (200, Mbit/s), FAIR_QUEUES ("20": the tbf queue
# in ms, its `latency`; a list runs each as a configuration, e.g. "20 5"),
# FAIR_SECONDS (30), FAIR_OMIT (2), FAIR_ROUNDS (3), RINGLAN_BIN (as for
# run.sh: default target/release/ringlan, built when missing or stale; when
# set, used as is). Missing Debian packages (iproute2, iperf3, nftables, jq,
# ethtool, iputils-ping) are installed first (run.sh's install_missing).
set -euo pipefail

RATE="${FAIR_RATE:-200}"
QUEUES="${FAIR_QUEUES:-20}"
FSECS="${FAIR_SECONDS:-30}"
OMIT="${FAIR_OMIT:-2}"
FROUNDS="${FAIR_ROUNDS:-3}"
export BENCH_SYSTEMS=ringlan
# run.sh's helpers (install_missing, build_ringlan, wait_until,
# ringlan_config, ringlan_open, stats, cell, median, ratio); sourced, it runs nothing.
# shellcheck source=tests/bench/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"
# stats/cell/median read ROUNDS.
ROUNDS="$FROUNDS"
FLOWS=(rl1 rl2 tcp)
declare -A SRC=([rl1]=s1 [rl2]=s2 [tcp]=s3) DST=([rl1]=10.77.1.2 [rl2]=10.77.2.2 [tcp]=198.19.3.2)
declare -A PAIR=([rl1]=1 [rl2]=2 [tcp]=3)
NSS=()
for n in ra rb s1 s2 s3 r1 r2 r3; do NSS+=("${P}fair-$n"); done

fair_cleanup() {
    local p ns
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap fair_cleanup EXIT

# inns NAME CMD...: run CMD in the lab namespace NAME (ra, s1, ...).
inns() { local n="$1"; shift; ip netns exec "${P}fair-$n" "$@"; }

# --- lab --------------------------------------------------------------------
setup_lab() {
    local ns k
    for ns in "${NSS[@]}"; do
        ip netns add "$ns"
        ip netns exec "$ns" ip link set lo up
    done
    ip link add bn netns "${P}fair-ra" type veth peer name bn netns "${P}fair-rb"
    inns ra ip addr add 198.18.255.1/30 dev bn
    inns rb ip addr add 198.18.255.2/30 dev bn
    inns ra ip link set bn up
    inns rb ip link set bn up
    for k in 1 2 3; do
        ip link add eth0 netns "${P}fair-s$k" type veth peer name "s$k" netns "${P}fair-ra"
        ip link add eth0 netns "${P}fair-r$k" type veth peer name "r$k" netns "${P}fair-rb"
        inns "s$k" ip addr add "198.18.$k.2/24" dev eth0
        inns ra ip addr add "198.18.$k.1/24" dev "s$k"
        inns "r$k" ip addr add "198.19.$k.2/24" dev eth0
        inns rb ip addr add "198.19.$k.1/24" dev "r$k"
        inns "s$k" ip link set eth0 up
        inns ra ip link set "s$k" up
        inns "r$k" ip link set eth0 up
        inns rb ip link set "r$k" up
        # Routes to the other side only: nothing leaves the lab.
        inns "s$k" ip route add 198.19.0.0/16 via "198.18.$k.1"
        inns "r$k" ip route add 198.18.0.0/16 via "198.19.$k.1"
        inns "s$k" ethtool -K eth0 tso off gso off tx-udp-segmentation off >/dev/null
    done
    inns ra ip route add 198.19.0.0/16 via 198.18.255.2
    inns rb ip route add 198.18.0.0/16 via 198.18.255.1
    inns ra sysctl -qw net.ipv4.ip_forward=1
    inns rb sysctl -qw net.ipv4.ip_forward=1
    for ns in ra rb; do
        inns "$ns" nft -f - <<'NFT'
table inet fair {
    counter f1 {}
    counter f2 {}
    counter f3 {}
    chain flows {
        type filter hook forward priority 0;
        ip saddr 198.18.1.2 ip daddr 198.19.1.2 counter name f1
        ip saddr 198.18.2.2 ip daddr 198.19.2.2 counter name f2
        ip saddr 198.18.3.2 ip daddr 198.19.3.2 counter name f3
    }
}
NFT
    done
    for k in 1 2 3; do
        wait_until 10 inns "s$k" ping -c1 -W1 "198.19.$k.2" \
            || { echo "fairness: lab path s$k -> r$k does not answer" >&2; return 1; }
    done
}

# set_queue MS: the bottleneck, tbf at RATE Mbit/s with a queue of MS ms.
# burst: 1 ms at the rate (25 KB at 200 Mbit/s), at least 10 full frames.
# The qdisc watchdog is an hrtimer, so the burst need not cover a jiffy
# (4 ms here, CONFIG_HZ=250); 1 ms keeps the link smooth at the scale of
# the lab's round trip while the timer's wake-up jitter (tens of us) costs
# no rate. latency MS: the queue tbf keeps (its limit = rate x MS + burst),
# 20 ms by default, a bottleneck buffer of a few BDPs of a 5-10 ms path
# and a usual size for a router or modem uplink; a shorter queue (5 ms)
# makes the flows' burstiness matter more.
set_queue() {
    local burst
    burst="$(awk -v r="$RATE" 'BEGIN {b = r * 1e6 / 8 / 1000; if (b < 15140) b = 15140; printf "%d", b}')"
    inns ra tc qdisc replace dev bn root tbf rate "${RATE}mbit" burst "$burst" latency "${1}ms"
}

# --- ringlan pairs ----------------------------------------------------------
# start_pair K: a ringlan network of two, fairK: the introducer in sK, a
# node in rK (run.sh's ringlan_config).
start_pair() {
    local k="$1" d="$WORK/ringlan$1" n ns
    mkdir -p "$d"
    (umask 077 && "$RINGLAN_BIN" secret >"$d/fair$k.secret")
    ringlan_config "$d" "fair$k" s introducer "10.77.$k.1" "[]" rl-fair
    ringlan_config "$d" "fair$k" r node "10.77.$k.2" "[198.18.$k.2:4910]" rl-fair
    for n in s r; do
        ns="${P}fair-$n$k"
        ip netns exec "$ns" "$RINGLAN_BIN" up -c "$d/$n.yaml" >"$WORK/ringlan$k-$n.log" 2>&1 &
        PIDS+=("$!")
    done
    if ! wait_until 30 ringlan_open "$d/s.sock" || ! wait_until 30 ringlan_open "$d/r.sock" \
        || ! wait_until 30 inns "s$k" ping -c1 -W1 "10.77.$k.2"; then
        echo "fairness: ringlan pair $k did not connect; logs:" >&2
        tail -n 20 "$WORK/ringlan$k"-*.log >&2
        return 1
    fi
}

# transport K: the sender's session counters of pair K, one line:
# frame_lost_bytes breaker_trips queue_full_drops timeouts burst_releases
# late_drops.
transport() {
    "$RINGLAN_BIN" status --socket "$WORK/ringlan$1/s.sock" --json | jq -r '[.sessions[]
        | select(.state == "open" and .transport != null) | .transport] | first // {}
        | [.frame_lost_bytes // 0, .breaker_trips // 0, .queue_full_drops // 0,
           .timeouts // 0, .burst_releases // 0, .late_drops // 0] | @tsv'
}

# sample_windows FILE K...: once a second until killed, the senders' cwnd,
# queued bytes and session RTT, "K cwnd queued rtt_ms" lines.
sample_windows() {
    local out="$1" k; shift
    while sleep 1; do
        for k in "$@"; do
            "$RINGLAN_BIN" status --socket "$WORK/ringlan$k/s.sock" --json 2>/dev/null | jq -r --arg k "$k" '[.sessions[]
                | select(.state == "open" and .transport != null)] | first // empty
                | [$k, .transport.cwnd, .transport.queued, (.rtt_ms // 0)] | @tsv' >>"$out" || true
        done
    done
}

# counters NS: bytes of f1 f2 f3 on router NS.
counters() {
    inns "$1" nft -j list counters table inet fair \
        | jq -r '[.nftables[] | select(.counter) | .counter] | sort_by(.name) | map(.bytes) | @tsv'
}

# --- measurement ------------------------------------------------------------
# Results keyed "FLOW-MODE,QUEUE,ROUND" (run.sh's stats/cell/median).
declare -A GOOD WIRE OFFER LOSS RETRS MRTT FLOST TRIPS QDROP LATE TMO CWND QUEUED SRTT JAIN JAINW MAXMIN

# run_flows MODE Q ROUND FLOW...: the flows at once, FSECS after OMIT.
run_flows() {
    local mode="$1" q="$2" round="$3"; shift 3
    local f k name srv=() cli=() a0 b0 a1 b1 t0=() t1=() sampler="" rl=()
    for f in "$@"; do
        name="$f-$mode-$q-$round"
        ip netns exec "${P}fair-r${PAIR[$f]}" iperf3 -s -1 -B "${DST[$f]}" >"$WORK/$name-server.log" 2>&1 &
        srv+=("$!"); PIDS+=("$!")
        [ "$f" = tcp ] || rl+=("${PAIR[$f]}")
    done
    for f in "$@"; do
        wait_until 10 inns "r${PAIR[$f]}" ss -Hltn "src ${DST[$f]}:5201" \
            || { echo "fairness: iperf3 server on ${DST[$f]} not listening" >&2; return 1; }
    done
    for k in "${rl[@]}"; do t0[k]="$(transport "$k")"; done
    for f in "$@"; do
        ip netns exec "${P}fair-${SRC[$f]}" iperf3 -c "${DST[$f]}" -t "$FSECS" -O "$OMIT" -C "$TCP_CC" -J \
            >"$WORK/$f-$mode-$q-$round.json" 2>&1 &
        cli+=("$!"); PIDS+=("$!")
    done
    sleep "$OMIT"
    a0="$(counters ra)"; b0="$(counters rb)"
    if [ "${#rl[@]}" -gt 0 ]; then
        : >"$WORK/win-$mode-$q-$round"
        sample_windows "$WORK/win-$mode-$q-$round" "${rl[@]}" &
        sampler=$!; PIDS+=("$sampler")
    fi
    sleep "$FSECS"
    a1="$(counters ra)"; b1="$(counters rb)"
    [ -n "$sampler" ] && { kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; }
    local failed=0
    for k in "${!cli[@]}"; do wait "${cli[$k]}" || failed=1; done
    for k in "${srv[@]}"; do wait "$k" 2>/dev/null || true; done
    for k in "${rl[@]}"; do t1[k]="$(transport "$k")"; done
    [ "$failed" = 0 ] || { echo "fairness: an iperf3 client failed ($mode $q round $round):" >&2
        for f in "$@"; do jq -r '.error // empty' "$WORK/$f-$mode-$q-$round.json" >&2 || true; done; return 1; }
    local key j i line x y
    for f in "$@"; do
        key="$f-$mode,$q,$round"; j="$WORK/$f-$mode-$q-$round.json"; i="${PAIR[$f]}"
        GOOD[$key]="$(jq -r '.end.sum_received.bits_per_second / 1e6' "$j")"
        RETRS[$key]="$(jq -r '.end.sum_sent.retransmits // 0' "$j")"
        MRTT[$key]="$(jq -r '.end.streams[0].sender.mean_rtt / 1000' "$j")"
        WIRE[$key]="$(awk -v a="$b0" -v b="$b1" -v i="$i" -v s="$FSECS" 'BEGIN {split(a, x, "\t"); split(b, y, "\t"); printf "%.2f", (y[i] - x[i]) * 8 / s / 1e6}')"
        OFFER[$key]="$(awk -v a="$a0" -v b="$a1" -v i="$i" -v s="$FSECS" 'BEGIN {split(a, x, "\t"); split(b, y, "\t"); printf "%.2f", (y[i] - x[i]) * 8 / s / 1e6}')"
        LOSS[$key]="$(awk -v o="${OFFER[$key]}" -v w="${WIRE[$key]}" 'BEGIN {if (o > 0) printf "%.3f", (1 - w / o) * 100}')"
        if [ "$f" != tcp ]; then
            read -r -a x <<<"${t0[i]}"; read -r -a y <<<"${t1[i]}"
            FLOST[$key]="$(awk -v a="${x[0]}" -v b="${y[0]}" 'BEGIN {printf "%.2f", (b - a) / 1e6}')"
            TRIPS[$key]=$(( y[1] - x[1] ))
            QDROP[$key]=$(( y[2] - x[2] ))
            TMO[$key]=$(( y[3] - x[3] ))
            LATE[$key]=$(( ${y[5]:-0} - ${x[5]:-0} ))
            line="$(awk -v k="$i" '$1 == k {n++; c += $2; q += $3; r += $4} END {if (n) printf "%.0f %.0f %.2f", c / n / 1024, q / n / 1024, r / n}' \
                "$WORK/win-$mode-$q-$round")"
            if [ -n "$line" ]; then read -r "CWND[$key]" "QUEUED[$key]" "SRTT[$key]" <<<"$line"; fi
        fi
        printf '  %-8s %-5s goodput %7.2f Mbit/s  bottleneck %7.2f (offered %7.2f, loss %6s%%)  retr %5s  rtt %6.2f ms%s\n' \
            "$mode" "$f" "${GOOD[$key]}" "${WIRE[$key]}" "${OFFER[$key]}" "${LOSS[$key]:--}" "${RETRS[$key]}" "${MRTT[$key]}" \
            "$( [ "$f" = tcp ] || echo "  frames lost ${FLOST[$key]} MB, breaker ${TRIPS[$key]}, queue-full ${QDROP[$key]}, late ${LATE[$key]}, timeouts ${TMO[$key]}, cwnd ~${CWND[$key]:-?} KiB, queued ~${QUEUED[$key]:-?} KiB, session rtt ~${SRTT[$key]:-?} ms")"
    done
}

# jain X...: Jain's fairness index (sum x)^2 / (n sum x^2) and max/min.
jain() {
    printf '%s\n' "$@" | awk '{s += $1; s2 += $1 * $1; if (NR == 1 || $1 < mn) mn = $1; if ($1 > mx) mx = $1}
        END {printf "%.3f %.2f", (s2 > 0 ? s * s / (NR * s2) : 0), (mn > 0 ? mx / mn : 0)}'
}

# fairness Q ROUND: Jain's index and max/min over the flows run together.
fairness() {
    local q="$1" round="$2" f g=() w=()
    for f in "${FLOWS[@]}"; do g+=("${GOOD[$f-together,$q,$round]}"); w+=("${WIRE[$f-together,$q,$round]}"); done
    read -r "JAIN[all,$q,$round]" "MAXMIN[all,$q,$round]" <<<"$(jain "${g[@]}")"
    read -r "JAINW[all,$q,$round]" "MAXMIN[wire,$q,$round]" <<<"$(jain "${w[@]}")"
    printf '  together: Jain %s (goodput), %s (bottleneck bytes); max/min %s, %s\n' "${JAIN[all,$q,$round]}" \
        "${JAINW[all,$q,$round]}" "${MAXMIN[all,$q,$round]}" "${MAXMIN[wire,$q,$round]}"
}

# share ARRAY KEY Q: the median of ARRAY as a share of RATE, percent.
share() { awk -v m="$(median "$1" "$2" "$3")" -v r="$RATE" 'BEGIN {if (m != "") printf "%.0f%%", m / r * 100; else print "-"}'; }

report() {
    local q f mode
    echo
    echo "==== ringlan fairness: tbf ${RATE} Mbit/s, $FROUNDS round(s) of ${FSECS} s (after ${OMIT} s warm-up), $(nproc) cores, $(uname -r), TCP $TCP_CC (BENCH_TCP_CC)"
    echo "ringlan: $RINGLAN_BIN ($("$RINGLAN_BIN" --version 2>/dev/null || echo '?')); load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rl1, rl2: one TCP stream through a ringlan session each; tcp: one TCP stream on the underlay."
    echo "cells: median [min-max] over the rounds, Mbit/s; goodput: iperf3 receiver; bottleneck: IP bytes"
    echo "that crossed the tbf (nft counter after it); loss: share of the flow's packets dropped at the tbf."
    for q in $QUEUES; do
        echo
        echo "-- tbf queue ${q} ms"
        printf '%-5s %-8s %-22s %-6s %-22s %-6s %-9s %-12s %-9s\n' flow mode goodput share bottleneck share "loss %" "tcp retr" "rtt ms"
        for mode in alone together; do
            for f in "${FLOWS[@]}"; do
                printf '%-5s %-8s %-22s %-6s %-22s %-6s %-9s %-12s %-9s\n' "$f" "$mode" "$(cell GOOD "$f-$mode" "$q")" \
                    "$(share GOOD "$f-$mode" "$q")" "$(cell WIRE "$f-$mode" "$q")" "$(share WIRE "$f-$mode" "$q")" \
                    "$(median LOSS "$f-$mode" "$q")" "$(median RETRS "$f-$mode" "$q")" "$(median MRTT "$f-$mode" "$q")"
            done
        done
        printf 'together: Jain index goodput %s, bottleneck bytes %s; max/min goodput %s, bottleneck bytes %s\n' \
            "$(cell JAIN all "$q")" "$(cell JAINW all "$q")" "$(cell MAXMIN all "$q")" "$(cell MAXMIN wire "$q")"
        echo "ringlan senders' sessions (medians over the rounds): frames lost MB, breaker trips, queue-full drops,"
        echo "mean cwnd KiB, mean queued KiB, mean session rtt ms"
        for mode in alone together; do
            for f in rl1 rl2; do
                printf '  %-4s %-8s lost %-8s trips %-5s qfull %-7s cwnd %-7s queued %-7s rtt %s\n' "$f" "$mode" \
                    "$(median FLOST "$f-$mode" "$q")" "$(median TRIPS "$f-$mode" "$q")" "$(median QDROP "$f-$mode" "$q")" \
                    "$(median CWND "$f-$mode" "$q")" "$(median QUEUED "$f-$mode" "$q")" "$(median SRTT "$f-$mode" "$q")"
            done
        done
    done
}

install_missing
build_ringlan
setup_lab
start_pair 1
start_pair 2
for ((round = 1; round <= FROUNDS; round++)); do
    for q in $QUEUES; do
        set_queue "$q"
        echo "round $round, tbf ${RATE} Mbit/s queue ${q} ms (load $(cut -d' ' -f1 /proc/loadavg))"
        for f in "${FLOWS[@]}"; do run_flows alone "$q" "$round" "$f"; done
        run_flows together "$q" "$round" "${FLOWS[@]}"
        fairness "$q" "$round"
    done
done
report
