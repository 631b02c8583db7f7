#!/usr/bin/env bash
# The fleet-scale benchmark (docs/benchmarks.md, "Fleet"): builds release
# binaries of the coordinator, rewindctl and the rewind-bench crate, then runs
# `fleet_load`, which starts a real rewind-coordinator and the bare tonic
# floor (`tonic_floor`) and drives N enrolled simulated agents over mTLS
# against each, printing every figure beside the floor with ratios and
# PASS/MISS.
#
#   scripts/bench-fleet.sh                       # N = 100 and 1,000
#   scripts/bench-fleet.sh --agents 5000 --agents 10000
#   scripts/bench-fleet.sh --agents 20 --results 200     # smoke
#
# Any argument is passed to fleet_load (see `fleet_load --help`); without
# --agents it runs 100 and 1,000. Needs util-linux `prlimit` (it raises the
# open-file limit to the hard limit; 10,000 agents need ~10,500).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 2; }
command -v prlimit >/dev/null || apt_install util-linux
cargo build --release --locked -p rewind-coordinator -p rewindctl -p rewind-bench
target="${CARGO_TARGET_DIR:-target}/release"
args=("$@")
case " $* " in
    *" --agents "*|*" --agents="*) ;;
    *) args=(--agents 100 --agents 1000 "${args[@]}") ;;
esac
exec "$target/fleet_load" --bin-dir "$target" "${args[@]}"
