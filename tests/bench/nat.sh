#!/usr/bin/env bash
# ringlan NAT benchmark (printed, not asserted), in the NAT lab of
# agent/tests/nat.rs (one introducer on a public segment, nodes behind
# nftables NAT routers, the default config: no other STUN server):
# 1. the NAT matrix of docs/nat.md: for each pair of NAT kinds (none,
#    cone-like `masquerade`, symmetric `masquerade fully-random`, two nodes
#    behind one NAT) the path the pair ends on and the time from both agents
#    started to it, over UDP and again with b's outgoing UDP dropped (the
#    TCP fallback: path and time to the first session);
# 2. two cone-like NATs: the time to the first ping reply, and the time
#    until pings pass again after a's NAT changes its public address (three
#    rebindings).
# Usage (root): tests/bench/nat.sh   Extra arguments go to the test binary.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ "$(id -u)" -ne 0 ]; then
    echo "bench: needs root (network namespaces); run: sudo $0" >&2
    exit 1
fi
for t in ip nft conntrack ping; do
    command -v "$t" >/dev/null || { echo "bench: missing $t (apt-get install iproute2 nftables conntrack iputils-ping)" >&2; exit 1; }
done
cd "$repo"
cargo test -p ringlan-agent --test nat -- --ignored --nocapture --exact \
    bench_nat_matrix "$@"
exec cargo test -p ringlan-agent --test nat -- --ignored --nocapture --exact \
    bench_nat_first_ping_and_rebinding_recovery "$@"
