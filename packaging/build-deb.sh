#!/bin/sh
# Build the Debian package (cargo-deb): the release binary, then the man
# pages and shell completions that binary writes (`ringlan generate`, into
# target/release/generated/, where agent/Cargo.toml's assets take them),
# then `cargo deb --no-build --strip`: the packaged binary carries no debug
# info (the release profile keeps line tables for profiling; the binary in
# target/ keeps them). Extra arguments go to cargo-deb, e.g.
#   packaging/build-deb.sh --output /tmp/ringlan.deb --deb-revision 2
# Prints the .deb's path last. Needs cargo-deb (`cargo install cargo-deb`).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 1
fi

cargo build --release -p ringlan-agent --bin ringlan
# Where Cargo put it (CARGO_TARGET_DIR, .cargo/config, or target/).
target=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target/release/ringlan"
gen="$target/release/generated"
rm -rf "$gen"
"$bin" generate man --out "$gen/man" >/dev/null
gzip -9n "$gen"/man/*.1
for shell in bash zsh fish; do
    "$bin" generate completions "$shell" --out "$gen/completions" >/dev/null
done

cargo deb -p ringlan-agent --no-build --strip "$@"
