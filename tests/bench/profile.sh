#!/usr/bin/env bash
# Where ringlan's CPU goes (printed, not asserted): run.sh's two namespaces
# with ringlan alone, PROFILE_RUNS single-stream iperf3 runs A -> B, each
# printing throughput, both agents' CPU seconds per GB, their system calls
# and context switches per GB (`perf stat` on each agent's pid) and the
# batching counters of their status (`io`: datagrams per sendmmsg/recvmmsg
# call and per GSO/GRO message, frames per TAP wake-up); then, with
# PROFILE_RECORD=1 (default), one more run under `perf record --call-graph`
# on each agent, reports in PROFILE_OUT. docs/dataplane.md "Where the CPU
# goes" has the figures and how to read them.
#
# Environment: PROFILE_RUNS (3), BENCH_SECONDS (10), PROFILE_RECORD (1),
# PROFILE_CALLGRAPH (dwarf; or fp, lbr), PROFILE_OUT (/tmp/ringlan-profile),
# RINGLAN_BIN (as for run.sh), BENCH_LOSS (0; one loss rate, percent),
# BENCH_RINGLAN_IO_THREADS (as for run.sh). Each run also prints each
# agent's CPU seconds per GB by thread (the node's thread is `ringlan`,
# with io_threads the send thread `ringlan-send` and the TAP write thread
# `ringlan-tap`).
# Missing Debian packages (run.sh's tools, linux-perf) are installed first.
# Usage (root): tests/bench/profile.sh
set -euo pipefail

RUNS="${PROFILE_RUNS:-3}"
RECORD="${PROFILE_RECORD:-1}"
CALLGRAPH="${PROFILE_CALLGRAPH:-dwarf}"
OUT="${PROFILE_OUT:-/tmp/ringlan-profile}"
export BENCH_SYSTEMS=ringlan
LOSS="${BENCH_LOSS:-0}"
# shellcheck source=tests/bench/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/run.sh"
# Sourced, run.sh installs nothing: its tools (iperf3, ping, ...) and perf.
install_missing
if ! command -v perf >/dev/null; then
    echo "profile: installing linux-perf"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-perf >/dev/null
fi
mkdir -p "$OUT"

EVENTS=raw_syscalls:sys_enter,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_recvmmsg
EVENTS+=,syscalls:sys_enter_read,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait
EVENTS+=,syscalls:sys_enter_sendto,context-switches

# io SOCKET: the agent's `io` counters as one line of numbers.
io() {
    "$RINGLAN_BIN" status --socket "$1" --json | jq -r '.io | [.wakeups, .udp_wakeups,
        .udp_send_calls, .udp_send_messages, .udp_datagrams_sent, .udp_recv_calls,
        .udp_recv_messages, .udp_datagrams_received, .tap_wakeups, .tap_reads, .tap_writes] | @tsv'
}

# frames_allocated SOCKET: the agent's sessions' `frame_buffers_allocated`,
# summed (docs/dataplane.md "One copy on the sender").
frames_allocated() {
    "$RINGLAN_BIN" status --socket "$1" --json |
        jq -r '[.sessions[].transport.frame_buffers_allocated // 0] | add // 0'
}

# thread_ticks PID: "name ticks" per thread name of PID (user + system
# clock ticks, threads of one name summed), one line each.
thread_ticks() {
    local t comm rest
    for t in /proc/"$1"/task/*; do
        comm="$(cat "$t/comm" 2>/dev/null)" || continue
        rest="$(sed 's/.*) //' "$t/stat" 2>/dev/null)" || continue
        # After the comm: state is field 1, utime 12, stime 13.
        echo "$comm $(echo "$rest" | awk '{ print $12 + $13 }')"
    done | awk '{ s[$1] += $2 } END { for (n in s) print n, s[n] }' | sort
}

# per_thread BEFORE AFTER GB: each thread's CPU seconds per GB.
per_thread() {
    awk -v gb="$3" -v hz="$CLK_TCK" 'NR == FNR { b[$1] = $2; next }
        { printf "%s %.2f  ", $1, ($2 - b[$1]) / hz / gb }' <(echo "$1") <(echo "$2")
}

# per_gb FILE GB: perf stat's CSV counts in FILE, each divided by GB.
per_gb() {
    awk -F, -v gb="$2" '$1 ~ /^[0-9]+$/ {
        n = $3; sub(/^(raw_)?syscalls:sys_enter_?/, "", n); if (n == "") n = "syscalls"
        printf "%s %.0f  ", n, $1 / gb }' "$1"
}

# batching BEFORE AFTER GB: the io counters' differences per GB and their ratios.
batching() {
    awk -v b="$1" -v a="$2" -v gb="$3" 'BEGIN {
        split(b, x, "\t"); split(a, y, "\t"); for (i = 1; i <= 11; i++) d[i] = y[i] - x[i]
        printf "per GB: wake-ups %d (udp %d, tap %d), dgrams sent %d, received %d; dgrams/sendmmsg %.1f, dgrams/GSO msg %.1f; dgrams/recvmmsg %.1f, dgrams/GRO msg %.1f; frames/TAP wake %.1f; TAP writes/GB %d",
            d[1] / gb, d[2] / gb, d[9] / gb, d[5] / gb, d[8] / gb,
            d[3] ? d[5] / d[3] : 0, d[4] ? d[5] / d[4] : 0,
            d[6] ? d[8] / d[6] : 0, d[7] ? d[8] / d[7] : 0,
            d[9] ? d[10] / d[9] : 0, d[11] / gb }'
}

# one_run NAME [perf record]: one single-stream iperf3 with the counters.
one_run() {
    local name="$1" rec="${2:-}" before after ioa0 iob0 ioa1 iob1 gb gbit
    local d="$WORK/ringlan"
    ioa0="$(io "$d/a.sock")"; iob0="$(io "$d/b.sock")"
    before="$(cpu_ticks "$RL_A")/$(cpu_ticks "$RL_B")"
    local tha0 thb0 tha1 thb1
    tha0="$(thread_ticks "$RL_A")"; thb0="$(thread_ticks "$RL_B")"
    local pa pb
    if [ -n "$rec" ]; then
        perf record -q -g --call-graph "$CALLGRAPH" -F 2000 -o "$OUT/$name-a.data" -p "$RL_A" -- sleep "$SECS" 2>/dev/null &
        pa=$!
        perf record -q -g --call-graph "$CALLGRAPH" -F 2000 -o "$OUT/$name-b.data" -p "$RL_B" -- sleep "$SECS" 2>/dev/null &
        pb=$!
    else
        perf stat -x, -e "$EVENTS" -o "$OUT/$name-a.stat" -p "$RL_A" -- sleep "$SECS" &
        pa=$!
        perf stat -x, -e "$EVENTS" -o "$OUT/$name-b.stat" -p "$RL_B" -- sleep "$SECS" &
        pb=$!
    fi
    iperf "$name" 10.77.0.2
    wait "$pa" "$pb" || true
    after="$(cpu_ticks "$RL_A")/$(cpu_ticks "$RL_B")"
    tha1="$(thread_ticks "$RL_A")"; thb1="$(thread_ticks "$RL_B")"
    ioa1="$(io "$d/a.sock")"; iob1="$(io "$d/b.sock")"
    gb="$(jq -r '.end.sum_received.bytes / 1e9' "$WORK/$name.json")"
    gbit="$(jq -r '.end.sum_received.bits_per_second / 1e9' "$WORK/$name.json")"
    awk -v n="$name" -v g="$gbit" -v gb="$gb" -v b="$before" -v a="$after" -v hz="$CLK_TCK" \
        -v r="$(jq -r '.end.sum_sent.retransmits' "$WORK/$name.json")" 'BEGIN {
        split(b, x, "/"); split(a, y, "/")
        ca = (y[1] - x[1]) / hz / gb; cb = (y[2] - x[2]) / hz / gb
        printf "%s: %.3f Gbit/s, retr %s, CPU s/GB: A %.2f + B %.2f = %.2f\n", n, g, r, ca, cb, ca + cb }'
    echo "  A (sender):   $(batching "$ioa0" "$ioa1" "$gb")"
    echo "  B (receiver): $(batching "$iob0" "$iob1" "$gb")"
    echo "  CPU s/GB by thread: A $(per_thread "$tha0" "$tha1" "$gb")| B $(per_thread "$thb0" "$thb1" "$gb")"
    echo "  A: frame buffers allocated so far (handed-over frames the pool had none for): $(frames_allocated "$d/a.sock")"
    if [ -z "$rec" ]; then
        echo "  A per GB: $(per_gb "$OUT/$name-a.stat" "$gb")"
        echo "  B per GB: $(per_gb "$OUT/$name-b.stat" "$gb")"
    fi
}

build_ringlan
setup
start_ringlan
set_loss "$LOSS"
echo "==== ringlan profile: $RUNS x ${SECS} s single stream, loss $LOSS%, $RINGLAN_BIN ($("$RINGLAN_BIN" --version 2>/dev/null || echo '?')), io_threads ${BENCH_RINGLAN_IO_THREADS:-auto}, load $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= RUNS; r++)); do
    one_run "run$r"
done
if [ "$RECORD" = 1 ]; then
    one_run record record
    for n in a b; do
        perf report -i "$OUT/record-$n.data" --no-children --percent-limit 0.7 --stdio \
            --sort symbol -g none 2>/dev/null >"$OUT/top-$n.txt" || true
        perf report -i "$OUT/record-$n.data" --children --percent-limit 2 --stdio \
            --sort symbol -g caller,0.5,callee --max-stack 30 2>/dev/null >"$OUT/tree-$n.txt" || true
        echo "-- agent $n: top symbols (self, % of the agent's samples); $OUT/tree-$n.txt has call graphs"
        grep -E '^ +[0-9]' "$OUT/top-$n.txt" | head -30
    done
fi
