#!/bin/bash
# The checks packaging/test-package.sh runs inside a fresh minimal Debian
# root (mmdebstrap --variant=apt: Essential packages and apt, nothing else).
# Reads /root/pkgtest/{prev.deb,new.deb,version}: the package twice (the
# "previous" build, one Debian revision lower, and the new one) and what
# `ringlan --version` printed on the build machine. Exits non-zero at the
# first failed check.
set -euo pipefail

dir=/root/pkgtest
cd "$dir"
export DEBIAN_FRONTEND=noninteractive
apt=(apt-get -y -q -o Dpkg::Use-Pty=0)

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
step() { printf '\n--- %s\n' "$*"; }
pass() { echo "ok: $*"; }

# mode PATH OWNER:GROUP:MODE
mode() {
    local got
    got=$(stat -c %U:%G:%a "$1") || fail "$1 is missing"
    [ "$got" = "$2" ] || fail "$1 is $got, want $2"
    pass "$1 $2"
}
gone() {
    local p
    for p in "$@"; do
        [ ! -e "$p" ] || fail "$p is still there"
    done
    pass "gone: $*"
}

# Every path on the root's file system, except the kernel's and ours.
snapshot() {
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /tmp \
        -o -path "$dir" \) -prune -o -print | LC_ALL=C sort
}

# Housekeeping of dpkg, apt, man-db and the shadow tools, and what
# `systemd-analyze verify` leaves in /run/systemd; anything else new after a
# purge is a leftover.
noise() {
    grep -Ev '^(/var/log/|/var/cache/|/var/lib/dpkg/|/var/lib/apt/|/run/systemd/|/etc/(passwd|group|shadow|gshadow|subuid|subgid)-?$|/etc/ld\.so\.cache$)'
}

deb_version() { dpkg-deb -f "$1" Version; }
installed_version() { dpkg-query -W -f='${Version}' ringlan; }

# --- A: a bare root ---------------------------------------------------------
step "A. apt-get install ./prev.deb in a bare root: dependencies resolve, postinst runs"
# Depends: libc6 and passwd (useradd). In bookworm both come with the
# Essential set (passwd through login); a suite where they do not makes apt
# fetch them here.
"${apt[@]}" install "$dir/prev.deb"
for dep in libc6 passwd; do
    dpkg -s "$dep" >/dev/null 2>&1 || fail "dependency $dep not installed"
done
pass "dependencies installed"
getent passwd ringlan >/dev/null || fail "postinst made no user ringlan"
mode /var/lib/ringlan ringlan:ringlan:700
[ "$(ringlan --version)" = "$(cat version)" ] || fail "ringlan --version: $(ringlan --version)"
pass "ringlan --version: $(ringlan --version)"
"${apt[@]}" purge ringlan
gone /usr/bin/ringlan /etc/ringlan /var/lib/ringlan

# --- B: the tools the checks use, then install, upgrade, remove, purge --------
step "B. tools for the checks (man-db, systemd)"
"${apt[@]}" install --no-install-recommends man-db systemd >/dev/null
snapshot >"$dir/before"

step "install ./prev.deb ($(deb_version prev.deb))"
"${apt[@]}" install "$dir/prev.deb"
[ "$(installed_version)" = "$(deb_version prev.deb)" ] || fail "installed $(installed_version)"
[ "$(ringlan --version)" = "$(cat version)" ] || fail "ringlan --version: $(ringlan --version)"
pass "ringlan --version: $(ringlan --version)"

step "the user, directories and modes postinst creates"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd ringlan) || fail "no user ringlan"
[ "$uid" -lt 1000 ] || fail "ringlan is not a system user (uid $uid)"
[ "$(getent group ringlan | cut -d: -f3)" = "$gid" ] || fail "ringlan's group is not ringlan"
[ "$home" = /var/lib/ringlan ] && [ "$shell" = /usr/sbin/nologin ] || fail "home $home shell $shell"
pass "system user ringlan (uid $uid), home $home, shell $shell"
mode /etc/ringlan root:ringlan:2750
mode /var/lib/ringlan ringlan:ringlan:700
mode /usr/bin/ringlan root:root:755
mode /lib/systemd/system/ringlan@.service root:root:644
mode /etc/ringlan/example.yaml.sample root:root:644

step "conffiles"
conffiles=$(dpkg-query -W -f='${Conffiles}\n' ringlan | awk 'NF {print $1}')
[ "$conffiles" = /etc/ringlan/example.yaml.sample ] || fail "conffiles: $conffiles"
pass "conffiles: $conffiles"
# Nothing the package ships under /etc is left out of the conffiles.
etc=$(dpkg -L ringlan | grep '^/etc/' | while read -r p; do [ -f "$p" ] && echo "$p"; done)
[ "$etc" = "$conffiles" ] || fail "files under /etc: $etc"

step "man pages"
[ "$(man -w ringlan)" = /usr/share/man/man1/ringlan.1.gz ] || fail "man -w ringlan: $(man -w ringlan)"
page=$(MANWIDTH=100 MANPAGER=cat man ringlan 2>&1) || fail "man ringlan: $page"
for want in "ringlan - Peer" SYNOPSIS "ringlan-up(1)" "ringlan-status(1)" FILES /etc/ringlan/NAME.yaml "$(cut -d' ' -f2- version)"; do
    grep -qF -- "$want" <<<"$page" || fail "man ringlan lacks \`$want\`"
done
pass "man ringlan"
sign=$(MANWIDTH=100 MANPAGER=cat man ringlan-ca-sign 2>&1) || fail "man ringlan-ca-sign: $sign"
grep -qF -- "--expires" <<<"$sign" || fail "man ringlan-ca-sign lacks --expires"
pass "man ringlan-ca-sign"
pages=$(dpkg -L ringlan | grep -c '^/usr/share/man/man1/ringlan.*\.1\.gz$')
[ "$pages" -ge 10 ] || fail "only $pages man pages"
pass "$pages man pages"

step "shell completions"
for f in /usr/share/bash-completion/completions/ringlan /usr/share/zsh/vendor-completions/_ringlan /usr/share/fish/vendor_completions.d/ringlan.fish; do
    mode "$f" root:root:644
done
got=$(bash --norc -c '. /usr/share/bash-completion/completions/ringlan
    COMP_WORDS=(ringlan stat); COMP_CWORD=1; COMP_LINE="ringlan stat"; COMP_POINT=12
    _ringlan ringlan stat ringlan; echo "${COMPREPLY[*]}"')
[ "$got" = status ] || fail "bash completes \`ringlan stat\` to \`$got\`"
pass "bash completes ringlan stat -> status"

step "systemd-analyze verify ringlan@home.service"
out=$(systemd-analyze verify ringlan@home.service 2>&1) || fail "systemd-analyze verify: $out"
if grep -i ringlan <<<"$out"; then
    fail "systemd-analyze verify warns about the unit"
fi
pass "unit verifies"

step "the administrator's files: an edited conffile, a config, secrets, a key"
echo "# edited by the administrator" >>/etc/ringlan/example.yaml.sample
cp /etc/ringlan/example.yaml.sample /etc/ringlan/home.yaml
ringlan secret -o /etc/ringlan/home.secret
mode /etc/ringlan/home.secret root:ringlan:640
# A secret made for a root service (before the unit had its own user).
ringlan secret -o /etc/ringlan/old.secret
chgrp root /etc/ringlan/old.secret
chmod 600 /etc/ringlan/old.secret
setpriv --reuid ringlan --regid ringlan --clear-groups \
    ringlan keygen -o /var/lib/ringlan/home.key >/dev/null
mode /var/lib/ringlan/home.key ringlan:ringlan:600
ringlan check-config /etc/ringlan/home.yaml
admin=(/etc/ringlan/example.yaml.sample /etc/ringlan/home.yaml /etc/ringlan/home.secret
    /etc/ringlan/old.secret /var/lib/ringlan/home.key)
sha256sum "${admin[@]}" >"$dir/sums"

step "upgrade to ./new.deb ($(deb_version new.deb)) keeps them"
dpkg --compare-versions "$(deb_version new.deb)" gt "$(deb_version prev.deb)" ||
    fail "new.deb is not newer than prev.deb"
"${apt[@]}" install "$dir/new.deb"
[ "$(installed_version)" = "$(deb_version new.deb)" ] || fail "installed $(installed_version)"
sha256sum -c --quiet "$dir/sums" || fail "the upgrade changed the administrator's files"
pass "edited conffile, config, secrets and key unchanged"
mode /etc/ringlan root:ringlan:2750
mode /var/lib/ringlan ringlan:ringlan:700
mode /etc/ringlan/home.secret root:ringlan:640
# postinst hands a root-only secret to the service's group.
mode /etc/ringlan/old.secret root:ringlan:640
[ "$(ringlan --version)" = "$(cat version)" ] || fail "ringlan --version after upgrade"

step "apt-get remove keeps configs and state"
"${apt[@]}" remove ringlan
gone /usr/bin/ringlan /lib/systemd/system/ringlan@.service /usr/share/man/man1/ringlan.1.gz
sha256sum -c --quiet "$dir/sums" || fail "remove changed the administrator's files"
pass "configs, secrets and key kept"
[ "$(dpkg-query -W -f='${db:Status-Abbrev}' ringlan)" = "rc " ] || fail "status after remove"

step "apt-get purge leaves only the administrator's files and the system user"
"${apt[@]}" purge ringlan
dpkg-query -W ringlan >/dev/null 2>&1 && fail "ringlan still known to dpkg"
gone /var/lib/ringlan /run/ringlan /etc/ringlan/example.yaml.sample
snapshot >"$dir/after"
added=$(LC_ALL=C comm -13 "$dir/before" "$dir/after" | noise || true)
removed=$(LC_ALL=C comm -23 "$dir/before" "$dir/after" | noise || true)
want_added=$(printf '%s\n' /etc/ringlan /etc/ringlan/home.secret /etc/ringlan/home.yaml /etc/ringlan/old.secret)
[ "$added" = "$want_added" ] || fail "left after purge, besides the administrator's files:
$(diff <(echo "$want_added") <(echo "$added") || true)"
[ -z "$removed" ] || fail "purge removed what was there before:
$removed"
pass "left: the administrator's configs and secrets in /etc/ringlan"
owned=$(find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o -user ringlan -print)
[ -z "$owned" ] || fail "files still owned by ringlan: $owned"
getent passwd ringlan >/dev/null && getent group ringlan >/dev/null ||
    fail "the system user or group went away"
pass "system user and group ringlan kept (postrm says why)"
rm -rf /etc/ringlan

echo
echo "package checks: all passed"
