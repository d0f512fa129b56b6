#!/usr/bin/env bash
# ringlan relay benchmark (printed, not asserted): in the NAT lab of
# agent/tests/relay.rs, two nodes behind `masquerade fully-random` NAT
# routers (no punch can work) and two introducers that relay: time from the
# agents started to the first ping and to the relayed session, throughput of
# TCP transfers through one relay against a direct path between two
# cone-like NATs measured in the same run (median, min and max of
# RELAY_BENCH_ROUNDS (3) transfers of RELAY_BENCH_MIB (400) MiB each), the
# CPU seconds per GB each agent spent on them (the ends and the relay in
# use), and the longest interruption of a TCP stream when the relay in use
# is SIGKILLed.
# Missing Debian packages (iproute2, nftables, conntrack, coturn,
# iputils-ping) are installed first.
# Usage (root): tests/bench/relay.sh   Extra arguments go to the test binary.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ "$(id -u)" -ne 0 ]; then
    echo "bench: needs root (network namespaces); run: sudo $0" >&2
    exit 1
fi
# The lab's Debian packages, installed when missing.
need=()
for t in ip:iproute2 nft:nftables conntrack:conntrack turnserver:coturn ping:iputils-ping; do
    command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "bench: installing ${need[*]}"
    command -v apt-get >/dev/null || { echo "bench: missing ${need[*]} and no apt-get" >&2; exit 1; }
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
cd "$repo"
exec cargo test --release -p ringlan-agent --test relay -- --ignored --nocapture --exact \
    bench_relay_first_ping_throughput_and_failover "$@"
