#!/bin/sh
# Install ringlan from a source checkout: builds the release binary, installs
# it with the systemd unit, creates the system user `ringlan`, /etc/ringlan
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
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    su "$SUDO_USER" -c "cd '$here' && cargo build --release -p ringlan-agent --bin ringlan"
else
    cargo build --release -p ringlan-agent --bin ringlan
fi

install -D -m 0755 target/release/ringlan "$PREFIX/bin/ringlan"
sed "s|/usr/bin/ringlan|$PREFIX/bin/ringlan|g" "packaging/ringlan@.service" > "$UNITDIR/ringlan@.service"
chmod 0644 "$UNITDIR/ringlan@.service"
# The service's user and directories, as the Debian package's postinst.
sh packaging/debian/postinst configure
install -m 0644 configs/node.yaml /etc/ringlan/example.yaml.sample

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

cat <<MSG
ringlan installed to $PREFIX/bin/ringlan; unit $UNITDIR/ringlan@.service.
Next, for a network called NAME:
  ringlan secret -o /etc/ringlan/NAME.secret     (or copy the network's secret: mode 0640, group ringlan)
  cp /etc/ringlan/example.yaml.sample /etc/ringlan/NAME.yaml && edit it
  ringlan check-config /etc/ringlan/NAME.yaml
  systemctl enable --now ringlan@NAME
MSG
