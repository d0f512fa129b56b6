#!/usr/bin/env bash
# Build the Debian package and check it as a new user meets it: in a fresh
# minimal Debian root (mmdebstrap --variant=apt), install it with
# `apt-get install ./ringlan.deb` (dependencies resolved), check
# `ringlan --version`, `man ringlan`, completions, `systemd-analyze verify`
# of the unit, the user, directories and modes postinst creates, the
# conffiles, an upgrade that keeps edited configs, remove, and that purge
# leaves only what packaging/README.md says it leaves
# (packaging/test-package-inside.sh has the checks). Run as root from
# anywhere in the checkout; tests/run-all.sh runs it.
#
# Environment:
#   SUITE    Debian suite of the root (default: this machine's, else bookworm)
#   MIRROR   Debian mirror (default: the deb.debian.org-style URI in this
#            machine's apt sources, else http://deb.debian.org/debian)
#   CACHE    where downloaded .debs are kept between runs
#            (default /var/cache/ringlan-pkgtest)
#   NO_APT=1 do not install mmdebstrap when missing
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
start=$SECONDS

if [ "$(id -u)" -ne 0 ]; then
    echo "test-package.sh: mmdebstrap needs root here; run: sudo $0" >&2
    exit 1
fi

# --- tools --------------------------------------------------------------------
if ! command -v mmdebstrap >/dev/null 2>&1; then
    if [ "${NO_APT:-0}" = 1 ]; then
        echo "test-package.sh: mmdebstrap is missing (NO_APT=1)" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap; }
fi
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked
fi

suite=${SUITE:-$( . /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")}
suite=${suite:-bookworm}
mirror=${MIRROR:-$( { grep -rhoE 'https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true; } |
    head -n1 | tr -d ' ')}
mirror=${mirror:-http://deb.debian.org/debian}
cache=${CACHE:-/var/cache/ringlan-pkgtest}
mkdir -p "$cache/apt"

work=$(mktemp -d /tmp/ringlan-pkgtest.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- build ----------------------------------------------------------------------
# The new package and a "previous build": the same binary one Debian revision
# lower, so that the second install is an upgrade (maintainer scripts run
# with the old version, conffiles are merged).
t=$SECONDS
packaging/build-deb.sh --output "$work/new.deb" --deb-revision 2
packaging/build-deb.sh --output "$work/prev.deb" --deb-revision 1 >/dev/null
target=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
"$target/release/ringlan" --version >"$work/version"
build_s=$((SECONDS - t))

# The packaged binary carries no debug info (DWARF; `.debug_gdb_scripts` is
# a loaded section, not debug info); the one in target/ does.
dpkg-deb --fsys-tarfile "$work/new.deb" | tar -xOf - ./usr/bin/ringlan >"$work/ringlan.packaged"
built=$(stat -c %s "$target/release/ringlan")
packaged=$(stat -c %s "$work/ringlan.packaged")
if readelf -S -W "$work/ringlan.packaged" | grep -Eq '\.debug_(info|line|str|abbrev|aranges|ranges|loc)'; then
    echo "FAIL: the packaged binary has debug sections" >&2
    exit 1
fi
if [ "$packaged" -ge "$built" ]; then
    echo "FAIL: the packaged binary ($packaged bytes) is not smaller than the built one ($built)" >&2
    exit 1
fi
printf 'binary: %d KiB built, %d KiB packaged (stripped); .deb %d KiB\n' \
    $((built / 1024)) $((packaged / 1024)) $(($(stat -c %s "$work/new.deb") / 1024))
dpkg-deb -f "$work/new.deb" Package Version Depends

# --- the Debian root ------------------------------------------------------------
# The checks run inside as a customize hook; the package cache is synced
# in and out so that repeated runs download only what changed.
t=$SECONDS
export PKGTEST_WORK="$work"
cp packaging/test-package-inside.sh "$work/"
echo 1 >"$work/rc"
mmdebstrap --variant=apt --skip=essential/unlink --mode=root \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $cache/apt /var/cache/apt/archives/" \
    --customize-hook='mkdir -p "$1"/root/pkgtest' \
    --customize-hook='cp "$PKGTEST_WORK"/new.deb "$PKGTEST_WORK"/prev.deb "$PKGTEST_WORK"/version "$PKGTEST_WORK"/test-package-inside.sh "$1"/root/pkgtest/' \
    --customize-hook='chroot "$1" bash /root/pkgtest/test-package-inside.sh; echo $? >"$PKGTEST_WORK"/rc' \
    --customize-hook="sync-out /var/cache/apt/archives $cache/apt" \
    "$suite" /dev/null "$mirror" </dev/null
root_s=$((SECONDS - t))
rc=$(cat "$work/rc")

printf '\npackage test: build %d s, Debian root and checks %d s, total %d s (%s, %s)\n' \
    "$build_s" "$root_s" $((SECONDS - start)) "$suite" "$mirror"
if [ "$rc" -ne 0 ]; then
    echo "package test: FAILED" >&2
    exit 1
fi
echo "package test: OK"
