#!/bin/sh
# Install ringlan from a source checkout: builds the release binary, installs
# it with the systemd unit, man pages and shell completions (bash, zsh,
# fish), creates the system user `ringlan`, /etc/ringlan
# (setgid ringlan) and /var/lib/ringlan, and reloads systemd. Starts
# nothing. Run as root from anywhere inside the checkout:
#   sudo packaging/install.sh            (PREFIX=/usr by default)
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr}
UNITDIR=${UNITDIR:-/lib/systemd/system}

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root" >&2
    exit 1
fi

cd "$here"
# Build as the invoking user when run through sudo, so target/ stays theirs.
builder() {
    if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
        su "$SUDO_USER" -c "cd '$here' && $*"
    else
        sh -c "$*"
    fi
}
builder cargo build --release -p ringlan-agent --bin ringlan
# Where Cargo put it (CARGO_TARGET_DIR, .cargo/config, or target/).
target=$(builder cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target=${target:-$here/target}
install -D -m 0755 "$target/release/ringlan" "$PREFIX/bin/ringlan"
# Man pages and completions, written by the binary from its own CLI.
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$PREFIX/bin/ringlan" generate man --out "$gen/man" >/dev/null
gzip -9n "$gen"/man/*.1
install -d "$PREFIX/share/man/man1"
install -m 0644 "$gen"/man/*.1.gz "$PREFIX/share/man/man1/"
for shell in bash zsh fish; do
    "$PREFIX/bin/ringlan" generate completions "$shell" --out "$gen" >/dev/null
done
if [ "$PREFIX" = /usr ]; then zshdir=vendor-completions; else zshdir=site-functions; fi
install -D -m 0644 "$gen/ringlan.bash" "$PREFIX/share/bash-completion/completions/ringlan"
install -D -m 0644 "$gen/_ringlan" "$PREFIX/share/zsh/$zshdir/_ringlan"
install -D -m 0644 "$gen/ringlan.fish" "$PREFIX/share/fish/vendor_completions.d/ringlan.fish"
sed "s|/usr/bin/ringlan|$PREFIX/bin/ringlan|g" "packaging/ringlan@.service" > "$UNITDIR/ringlan@.service"
chmod 0644 "$UNITDIR/ringlan@.service"
# The service's user and directories, as the Debian package's postinst.
sh packaging/debian/postinst configure
install -m 0644 configs/node.yaml /etc/ringlan/example.yaml.sample

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

cat <<MSG
ringlan installed to $PREFIX/bin/ringlan; unit $UNITDIR/ringlan@.service;
man ringlan; completions for bash, zsh and fish.
Next, for a network called NAME:
  ringlan secret -o /etc/ringlan/NAME.secret     (or copy the network's secret: mode 0640, group ringlan)
  cp /etc/ringlan/example.yaml.sample /etc/ringlan/NAME.yaml && edit it
  ringlan check-config /etc/ringlan/NAME.yaml
  systemctl enable --now ringlan@NAME
MSG
