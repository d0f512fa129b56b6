#!/usr/bin/env bash
# ringlan NAT benchmark (printed, not asserted): in the NAT lab of
# agent/tests/nat.rs (an introducer and coturn on a public segment, two
# nodes behind two `masquerade` NAT routers), the time from both agents
# started to the first ping reply across the NATs, and the time until pings
# pass again after a's NAT changes its public address (three rebindings).
# Usage (root): tests/bench/nat.sh   Extra arguments go to the test binary.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ "$(id -u)" -ne 0 ]; then
    echo "bench: needs root (network namespaces); run: sudo $0" >&2
    exit 1
fi
for t in ip nft conntrack turnserver ping; do
    command -v "$t" >/dev/null || { echo "bench: missing $t (apt-get install iproute2 nftables conntrack coturn iputils-ping)" >&2; exit 1; }
done
cd "$repo"
exec cargo test -p ringlan-agent --test nat -- --ignored --nocapture --exact \
    bench_nat_first_ping_and_rebinding_recovery "$@"
