#!/usr/bin/env bash
# The fleet-scale benchmark (docs/benchmarks.md, "Fleet"): builds release
# binaries of the coordinator, rewindctl, the agent and the rewind-bench
# crate, then runs
#
# - `fleet_load`, which starts a real rewind-coordinator and the bare tonic
#   floor (`tonic_floor`) and drives N enrolled simulated agents over mTLS
#   against each, printing every figure beside the floor with ratios and
#   PASS/MISS (halt to verified rollback of the N simulated agents included);
# - `rollback_real`, halt to verified rollback with real `rewind-agent`
#   processes on small real databases (default 20; `--real-agents 0` skips
#   it), at the coordinator's default heartbeat and at 1 s.
#
#   scripts/bench-fleet.sh                       # N = 100 and 1,000; 20 real agents
#   scripts/bench-fleet.sh --agents 5000 --agents 10000 --real-agents 0
#   scripts/bench-fleet.sh --agents 20 --results 200 --real-agents 3   # smoke
#   scripts/bench-fleet.sh --agents 1000 --store both --real-agents 0  # SQLite and PostgreSQL
#
# Every other argument is passed to fleet_load (see `fleet_load --help`);
# without --agents it runs 100 and 1,000. `--store sqlite|postgres|both`
# (repeatable; default sqlite) picks the coordinator's store for fleet_load;
# postgres (or both) installs PostgreSQL when missing (scripts/deps.sh
# need_postgres, as scripts/test.sh does) and fleet_load starts a server of
# its own with the tests' harness. Needs util-linux `prlimit` (it raises the
# open-file limit to the hard limit; 10,000 agents need ~10,500).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 2; }
command -v prlimit >/dev/null || apt_install util-linux

real=20
args=()
stores=()
while [ $# -gt 0 ]; do
    case "$1" in
        --real-agents) [ $# -ge 2 ] || { echo "--real-agents needs a number" >&2; exit 2; }; real="$2"; shift 2 ;;
        --real-agents=*) real="${1#*=}"; shift ;;
        --store) [ $# -ge 2 ] || { echo "--store needs sqlite, postgres or both" >&2; exit 2; }
            stores+=("$2"); args+=("$1" "$2"); shift 2 ;;
        --store=*) stores+=("${1#*=}"); args+=("$1"); shift ;;
        *) args+=("$1"); shift ;;
    esac
done
case ",$(IFS=,; echo "${stores[*]-}")," in
    *,postgres,*|*,both,*) need_postgres ;;
esac
case "$real" in
    ''|*[!0-9]*) echo "--real-agents $real: give a number of agents (0 skips the real-agent run)" >&2; exit 2 ;;
esac
case " ${args[*]-} " in
    *" --agents "*|*" --agents="*) ;;
    *) args=(--agents 100 --agents 1000 "${args[@]}") ;;
esac

cargo build --release --locked -p rewind-coordinator -p rewindctl -p rewind-agent -p rewind-bench
target="${CARGO_TARGET_DIR:-target}/release"
"$target/fleet_load" --bin-dir "$target" "${args[@]}"
if [ "$real" -gt 0 ]; then
    # At the coordinator's default heartbeat (30 s), then at 1 s: an agent
    # sends a plan's result with its next heartbeat (docs/benchmarks.md).
    for heartbeat in 30 1; do
        echo
        "$target/rollback_real" --bin-dir "$target" --agents "$real" --heartbeat-seconds "$heartbeat"
    done
fi
