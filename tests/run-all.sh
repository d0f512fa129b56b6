#!/usr/bin/env bash
# The full ringlan check: formatting, lints, unit + end-to-end tests (network
# namespaces, needs root), the Debian package in a minimal Debian root
# (packaging/test-package.sh), fuzz smoke. Usage: `sudo tests/run-all.sh` (from any
# directory). Environment:
#   FUZZ_SECONDS   seconds per fuzz target, every target of tunnel/fuzz,
#                  overlay/fuzz and agent/core/fuzz (default 20; 0 skips the
#                  fuzz smoke)
#   FUZZ_TOOLCHAIN toolchain for cargo fuzz (default: nightly if installed, else stable)
#   NO_APT=1       do not install missing Debian packages
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

declare -a results=()
failed=0

log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# step NAME CMD...: run CMD, record the outcome, keep going on failure.
step() {
    local name="$1"
    shift
    log "$name: $*"
    local start=$SECONDS
    if "$@"; then
        results+=("PASS  $name ($((SECONDS - start)) s)")
    else
        results+=("FAIL  $name ($((SECONDS - start)) s)")
        failed=1
    fi
}

summary() {
    printf '\n==== ringlan run-all summary (%d s total) ====\n' "$SECONDS"
    local r
    for r in "${results[@]}"; do
        printf '%s\n' "$r"
    done
    for r in "${failed_tests[@]}"; do
        printf '      %s\n' "$r"
    done
    if [ "$failed" -ne 0 ]; then
        printf 'RESULT: FAILED\n'
    else
        printf 'RESULT: OK\n'
    fi
}
trap summary EXIT
failed_tests=()

if [ "$(id -u)" -ne 0 ]; then
    echo "run-all.sh: the end-to-end tests need root; run: sudo $0" >&2
    failed=1
    exit 1
fi
# The end-to-end tests must run here, never skip.
unset RINGLAN_SKIP_ROOT_TESTS

# --- Debian packages --------------------------------------------------------
need_pkgs=()
check_tool() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
check_tool ip iproute2
check_tool nft nftables
check_tool iperf3 iperf3
check_tool turnserver coturn
check_tool tincd tinc
check_tool ping iputils-ping
check_tool conntrack conntrack
check_tool systemctl systemd
check_tool ps procps
check_tool c++ g++
# agent/tests/directory.rs asks the agents' DNS responders with dig.
check_tool dig bind9-dnsutils
# agent/tests/unprivileged.rs drops privileges with setpriv in a private
# mount namespace (unshare); both are util-linux, essential on Debian.
check_tool setpriv util-linux
check_tool unshare util-linux
# agent/tests/generate.rs renders the man pages with man(1);
# packaging/test-package.sh builds a Debian root with mmdebstrap.
check_tool man man-db
check_tool mmdebstrap mmdebstrap
check_tool readelf binutils
# agent/tests/topology.rs opens the metrics page in headless Chromium,
# driven over WebDriver by chromedriver.
check_tool chromium chromium
check_tool chromedriver chromium-driver
# agent/tests/e2e.rs turns the underlay's segmentation offloads off for its
# lossy-underlay test.
check_tool ethtool ethtool
install_deps() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
}
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    if [ "${NO_APT:-0}" = 1 ]; then
        echo "missing packages: ${need_pkgs[*]} (NO_APT=1)" >&2
        failed=1
        exit 1
    fi
    step "install packages" install_deps
    [ "$failed" -eq 0 ] || exit 1
fi

# --- Rust components ----------------------------------------------------------
ensure_components() {
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
}
step "rust components" ensure_components

# --- checks -------------------------------------------------------------------
step "fmt" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-targets -- -D warnings
# Every test binary runs even after one fails (--no-fail-fast), and the summary
# names each failed test with the first lines of its panic: CI keeps only the
# tail of this script's output.
test_log="$(mktemp /tmp/ringlan-tests.XXXXXX)"
run_tests() {
    local rc=0
    cargo test --workspace --no-fail-fast 2>&1 | tee "$test_log" || rc=$?
    if [ "$rc" -ne 0 ]; then
        # "---- NAME stdout ----" opens a failed test's captured output; keep the
        # panic location and the message line after it.
        mapfile -t failed_tests < <(awk '
            /^---- .* stdout ----$/ { name = $2; n = 0; next }
            name != "" && /panicked at/ { print name ": " $0; n = 1; next }
            name != "" && n == 1 { print "    " $0; n = 0; name = "" }
            /^error: test failed, to rerun pass/ { print $0 }
        ' "$test_log" | cut -c1-300 | head -40)
        failed_tests+=("whole output: $test_log")
    else
        rm -f "$test_log"
    fi
    return "$rc"
}
step "tests" run_tests
# The .deb installed, upgraded and purged in a fresh minimal Debian root.
step "package" packaging/test-package.sh

# --- fuzz smoke -----------------------------------------------------------------
# Every target of every cargo-fuzz project (`<crate>/fuzz`, one or two levels
# down: `agent/core/fuzz`), FUZZ_SECONDS each,
# starting from the committed seed corpus. Without a sanitizer (`-s none`) so
# the stable toolchain works; panics and failed assertions still abort.
fuzz_seconds="${FUZZ_SECONDS:-20}"
fuzz_projects=()
for d in */fuzz */*/fuzz; do
    if [ -f "$d/Cargo.toml" ]; then fuzz_projects+=("${d%/fuzz}"); fi
done
fuzz_smoke() {
    local tc="${FUZZ_TOOLCHAIN:-}"
    if [ -z "$tc" ]; then
        if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then tc=nightly; else tc=stable; fi
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked
    fi
    local crate targets t
    for crate in "${fuzz_projects[@]}"; do
        targets="$(cd "$crate" && cargo "+$tc" fuzz list)" || return 1
        if [ -z "$targets" ]; then
            echo "no fuzz targets in $crate/fuzz" >&2
            return 1
        fi
        log "fuzz build $crate ($tc)"
        (cd "$crate" && cargo "+$tc" fuzz build -s none) || return 1
        for t in $targets; do
            log "fuzz $crate/$t for ${fuzz_seconds} s ($tc)"
            (cd "$crate" && cargo "+$tc" fuzz run -s none "$t" -- -max_total_time="$fuzz_seconds") || return 1
        done
    done
}
if [ "$fuzz_seconds" = 0 ]; then
    results+=("SKIP  fuzz smoke (FUZZ_SECONDS=0)")
elif [ "${#fuzz_projects[@]}" -gt 0 ]; then
    step "fuzz smoke (${fuzz_projects[*]})" fuzz_smoke
else
    results+=("SKIP  fuzz smoke (no */fuzz project)")
fi

[ "$failed" -eq 0 ]
