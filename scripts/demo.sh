#!/usr/bin/env bash
# Runs the Rewind demo from a fresh clone (README.md's first command).
# Builds the release binaries and runs `rewindctl demo`; extra arguments are
# passed on (e.g. --exit, --dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 2; }
cargo build --release --locked -p rewind-agent -p rewindctl
exec target/release/rewindctl demo "$@"
