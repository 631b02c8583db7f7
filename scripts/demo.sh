#!/usr/bin/env bash
# The Rewind fleet demo from a fresh clone (README.md's first command).
# Installs what the build needs when it is missing (a C compiler; Rust itself
# comes from rustup), builds release binaries of rewindctl (the coordinator is
# embedded in it) and rewind-agent, and runs `rewindctl demo`: an embedded
# coordinator, six agent processes, a release whose canary fails and is
# rolled back automatically, then a good release to the whole fleet, with the
# status page live until Ctrl-C. Extra arguments go to `rewindctl demo`
# (e.g. --exit, --dir DIR, --agents N, --json, --local); see docs/demo.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
need_demo_deps
cargo build --release --locked -p rewind-agent -p rewindctl
exec "${CARGO_TARGET_DIR:-target}/release/rewindctl" demo "$@"
