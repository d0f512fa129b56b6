#!/usr/bin/env bash
# One ringlan build against another, in pairs of runs back to back: for
# small changes to the data path, where run.sh's rounds (minutes apart)
# cannot tell a few percent from the machine's drift. On the shared 2-core
# bench machine the same binary's CPU per GB moves by a third within an
# hour, but two runs a few seconds apart mostly agree within 5 % on a clean
# path (within a fifth at 1 % loss).
#
# run.sh's two namespaces with ringlan alone; per pair, each build's two
# agents are started, one single-stream iperf3 of AB_SECONDS is measured
# (throughput, both agents' CPU seconds per GB, the sender's TCP
# retransmissions, the ping RTT idle before it and under load during it,
# both agents' loop turns per GB) and the agents are stopped. The order within a pair
# alternates (A B, B A, ...) so neither build always runs second. The
# report gives each pair's figures, then per figure the median, min and max
# of the per-pair ratios B / A: a change is real when the ratios' range
# stays on one side of 1.
#
# Usage (root): AB_BIN_A=<ringlan binary> AB_BIN_B=<ringlan binary> tests/bench/ab.sh
# Environment: AB_PAIRS (8), AB_SECONDS (6), BENCH_LOSS (0; one loss rate,
# percent, as run.sh sets it), BENCH_TCP_CC and BENCH_RINGLAN_IO_THREADS as
# for run.sh. docs/dataplane.md ("Telling small changes apart") has how
# it was used.
set -euo pipefail

PAIRS="${AB_PAIRS:-8}"
BIN_A="${AB_BIN_A:?set AB_BIN_A to the baseline ringlan binary}"
BIN_B="${AB_BIN_B:?set AB_BIN_B to the ringlan binary to compare}"
export BENCH_SECONDS="${AB_SECONDS:-6}"
export BENCH_SYSTEMS=ringlan
LOSS="${BENCH_LOSS:-0}"
for b in "$BIN_A" "$BIN_B"; do
    [ -x "$b" ] || { echo "ab: $b is not an executable" >&2; exit 1; }
done
# run.sh uses RINGLAN_BIN as is when it is set; each run sets it.
export RINGLAN_BIN="$BIN_A"
# shellcheck source=tests/bench/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"
install_missing

# stop_ringlan: end both agents of start_ringlan and wait until they are gone
# (their TAPs with them), so the next build starts on the same names.
stop_ringlan() {
    local p
    for p in "$RL_A" "$RL_B"; do kill "$p" 2>/dev/null || true; done
    for p in "$RL_A" "$RL_B"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK/ringlan"
}

# turns SOCKET: the agent's loop turns so far (`io.wakeups` of its status).
turns() { "$RINGLAN_BIN" status --socket "$1" --json | jq -r '.io.wakeups'; }

# one_run LABEL BIN: start BIN's agents, measure the idle RTT, then one
# single stream with pings alongside, stop them; writes "LABEL gbit
# cpu_per_gb retransmits rtt_idle_ms rtt_loaded_ms turns_per_gb" to
# $WORK/ab-LABEL.out. Run in this shell, not in a command substitution, so
# that the agents' pids reach PIDS and the exit trap ends them if the
# bench is interrupted.
one_run() {
    local label="$1" before after gb rtt0 ta0 tb0 ta1 tb1 pinger d="$WORK/ringlan"
    RINGLAN_BIN="$2"
    start_ringlan
    rtt0="$(ping_avg -c "$PINGS" -i 0.05 10.77.0.2)"
    before="$(cpu_ticks "$RL_A" "$RL_B")"
    ta0="$(turns "$d/a.sock")"; tb0="$(turns "$d/b.sock")"
    ip netns exec "$NS_A" ping -n -q -i 0.1 -w "$SECS" 10.77.0.2 >"$WORK/ab-$label-ping.log" 2>&1 &
    pinger=$!
    PIDS+=("$pinger")
    iperf "ab-$label" 10.77.0.2
    after="$(cpu_ticks "$RL_A" "$RL_B")"
    ta1="$(turns "$d/a.sock")"; tb1="$(turns "$d/b.sock")"
    wait "$pinger" 2>/dev/null || true
    stop_ringlan
    gb="$(jq -r '.end.sum_received.bytes / 1e9' "$WORK/ab-$label.json")"
    awk -v l="$label" -v b="$before" -v a="$after" -v hz="$CLK_TCK" -v gb="$gb" \
        -v g="$(jq -r '.end.sum_received.bits_per_second / 1e9' "$WORK/ab-$label.json")" \
        -v r="$(jq -r '.end.sum_sent.retransmits' "$WORK/ab-$label.json")" \
        -v r0="${rtt0:-0}" -v rl="$(awk -F/ '/^rtt/ {print $5}' "$WORK/ab-$label-ping.log")" \
        -v t="$(( ta1 - ta0 + tb1 - tb0 ))" \
        'BEGIN { printf "%s %.3f %.3f %s %.3f %.3f %.0f\n", l, g, (a - b) / hz / gb, r, r0, rl + 0, t / gb }' \
        >"$WORK/ab-$label.out"
}

setup
set_loss "$LOSS"
echo "==== ab: $PAIRS pairs of ${BENCH_SECONDS} s single streams, loss $LOSS%, TCP $TCP_CC, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  A: $BIN_A ($("$BIN_A" --version 2>/dev/null || echo '?'))"
echo "  B: $BIN_B ($("$BIN_B" --version 2>/dev/null || echo '?'))"
printf '%-5s %-44s %-44s %s\n' pair "A: Gbit/s, CPU s/GB, RTT idle/loaded ms, turns/GB" "B: the same" "B/A Gbit/s, CPU"
RESULTS="$WORK/ab-results"
: >"$RESULTS"
for ((p = 1; p <= PAIRS; p++)); do
    if ((p % 2)); then
        one_run "a$p" "$BIN_A"; one_run "b$p" "$BIN_B"
    else
        one_run "b$p" "$BIN_B"; one_run "a$p" "$BIN_A"
    fi
    read -r _ ga ca xa ia la ta <"$WORK/ab-a$p.out"
    read -r _ gb cb xb ib lb tb <"$WORK/ab-b$p.out"
    echo "$ga $ca $ia $la $ta $gb $cb $ib $lb $tb" >>"$RESULTS"
    printf '%-5s %-44s %-44s %s\n' "$p" "$ga, $ca, $ia/$la, $ta (retr $xa)" "$gb, $cb, $ib/$lb, $tb (retr $xb)" \
        "$(awk -v ga="$ga" -v gb="$gb" -v ca="$ca" -v cb="$cb" 'BEGIN {printf "%.3f, %.3f", gb / ga, cb / ca}')"
done
set_loss 0
# summary COLUMN_A COLUMN_B NAME: median [min-max] of the per-pair ratios.
summary() {
    awk -v a="$1" -v b="$2" '{ print $b / $a }' "$RESULTS" | sort -g | awk -v n="$3" '
        { v[NR] = $1 }
        END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "  B/A %-16s median %.3f [%.3f-%.3f] over %d pairs\n", n, m, v[1], v[NR], NR }'
}
summary 1 6 "throughput"
summary 2 7 "CPU s per GB"
summary 3 8 "RTT idle"
summary 4 9 "RTT under load"
summary 5 10 "loop turns per GB"
