#!/usr/bin/env bash
# Builds the pvusb Debian package into target/debian/ with cargo-deb, which
# this script installs from crates.io when missing. Man pages and shell
# completions come from the clap definitions of the binary just built.
#   packaging/build-deb.sh            # prints the .deb's path on its last line
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION="${CARGO_DEB_VERSION:-3.8.0}"
if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb $CARGO_DEB_VERSION from crates.io" >&2
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" >&2
fi
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked -p pvusb >&2
assets="$target/release/pvusb-assets"
rm -rf "$assets"
"$target/release/pvusb" generate man "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.8   # Debian policy: compressed man pages
"$target/release/pvusb" generate completions "$assets/completions" >/dev/null
cargo deb -p pvusb --no-build --output target/debian/ | tail -n 1
