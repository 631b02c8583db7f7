#!/usr/bin/env bash
# Runs Rewind's benchmarks (docs/benchmarks.md): installs the peers when
# missing (sqlite3, Sqitch with its SQLite driver, GNU time; SQLite's dbhash
# tool is built from the Debian source package of sqlite3 into a cache dir),
# builds the release binaries and runs `rewind-bench`, which prints every
# figure as ours, peer, ratio, goal and PASS/MISS.
#
#   scripts/bench.sh                 # ~300 MiB database, 5 runs each
#   scripts/bench.sh --quick         # 5 MiB smoke run (CI)
#   scripts/bench.sh --size-mb 1000 --reps 7 --only snapshot,digest
#
# Environment: REWIND_BENCH_DIR (work dir on a real disk, default
# target/bench-work; the generated databases are deleted afterwards),
# REWIND_BENCH_CACHE (where dbhash is built, default ~/.cache/rewind-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 2; }
apt_install sqlite3 sqitch libdbd-sqlite3-perl time gcc libc6-dev libsqlite3-dev xz-utils

cache="${REWIND_BENCH_CACHE:-$HOME/.cache/rewind-bench}"
mkdir -p "$cache"

# SQLite's dbhash (public domain, tool/dbhash.c) is not packaged by Debian:
# fetch the sqlite3 source package with apt-get, using a private deb-src
# list and private state so the system's apt configuration is untouched.
build_dbhash() {
    [ -x "$cache/dbhash" ] && return 0
    local codename apt_dir src
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    [ -n "$codename" ] || return 1
    apt_dir="$cache/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/src"
    cat >"$apt_dir/sources.list" <<EOF
deb-src http://deb.debian.org/debian $codename main
deb-src http://deb.debian.org/debian $codename-updates main
deb-src http://deb.debian.org/debian-security $codename-security main
EOF
    local opts=(-q -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=-
                -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
    apt-get "${opts[@]}" update >/dev/null 2>&1 || return 1
    (cd "$apt_dir/src" && apt-get "${opts[@]}" source --download-only sqlite3 >/dev/null 2>&1) || return 1
    src="$(ls "$apt_dir"/src/sqlite3_*.orig.tar.* 2>/dev/null | grep -v www | head -n1)"
    [ -n "$src" ] || return 1
    tar -xf "$src" -C "$apt_dir/src" --wildcards '*/tool/dbhash.c' || return 1
    cc -O2 -o "$cache/dbhash" "$(find "$apt_dir/src" -name dbhash.c | head -n1)" -lsqlite3 || return 1
    rm -rf "$apt_dir/src"
}
if build_dbhash; then
    export REWIND_BENCH_DBHASH="$cache/dbhash"
else
    echo "note: could not build SQLite's dbhash; the digest is compared with sha256sum of the file instead" >&2
fi

dir="${REWIND_BENCH_DIR:-target/bench-work}"
mkdir -p "$dir"
if [ "$(df --output=fstype "$dir" | tail -n1)" = tmpfs ]; then
    echo "warning: $dir is on tmpfs; set REWIND_BENCH_DIR to a directory on a real disk for meaningful cp+sync figures" >&2
fi
export REWIND_BENCH_DIR="$dir"

export CARGO_TERM_COLOR=never
cargo build --release --locked -p rewind-agent -p rewind-bench
exec "${CARGO_TARGET_DIR:-target}/release/rewind-bench" "$@"
