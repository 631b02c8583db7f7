#!/usr/bin/env bash
# Runs the whole test suite from a fresh clone: installs what the tests need
# (Debian packages, PyPI packages) when missing, builds every binary with the
# `fault-injection` feature (crash-point tests need it), then runs every test.
# README.md gives this command; .ci/run calls exactly it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
need_test_deps
export CARGO_TERM_COLOR=never
features="--features rewind-agent/fault-injection"
cargo build --locked --workspace --bins $features
cargo test --locked --workspace $features "$@"
