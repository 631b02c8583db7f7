# Installs what tests, demo and benchmarks need, only when it is missing.
# Sourced by scripts/*.sh. Debian packages via apt-get (as root, or with sudo).

apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing Debian packages: ${missing[*]}" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# PostgreSQL server for the coordinator's PostgreSQL store tests
# (tests/src/postgres.rs runs initdb and postgres from
# /usr/lib/postgresql/<major>/bin as an unprivileged user; psql makes databases).
need_postgres() {
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v psql >/dev/null && return 0
    # The tests start clusters of their own on free ports; any cluster the
    # package sets up is left alone.
    apt_install postgresql postgresql-client
}

# Debian's Chromium and ChromeDriver, Selenium and the Prometheus text
# parser from PyPI: tests/tests/web_surface.rs drives the status page and
# the dashboard in a real headless browser (tests/web/browser.py).
need_browser() {
    apt_install chromium chromium-driver
    python3 -c "import selenium, prometheus_client" 2>/dev/null || {
        echo "installing PyPI packages: selenium prometheus-client" >&2
        python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
        python3 -m pip install --quiet selenium prometheus-client 2>/dev/null ||
            python3 -m pip install --quiet --break-system-packages selenium prometheus-client
    }
}

# The OpenFeature Python SDK and its OFREP provider: tests/tests/agent_ofrep.rs
# reads the agent's flags with them (tests/tests/agent_ofrep_client.py).
need_openfeature() {
    python3 -c "import openfeature.contrib.provider.ofrep" 2>/dev/null && return 0
    echo "installing PyPI packages: openfeature-sdk openfeature-provider-ofrep" >&2
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    python3 -m pip install --quiet openfeature-sdk openfeature-provider-ofrep 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages openfeature-sdk openfeature-provider-ofrep
}

# systemd-analyze (Debian's systemd package; only the tool is used, no
# systemd needs to run): tests/tests/deploy_files.rs verifies the units in
# deploy/ with `systemd-analyze verify` and `security --offline=yes`.
need_systemd_analyze() {
    command -v systemd-analyze >/dev/null && return 0
    apt_install systemd
}

# PyYAML: tests/tests/deploy_files.rs parses deploy/compose.yaml with it.
need_python_yaml() {
    python3 -c "import yaml" 2>/dev/null && return 0
    apt_install python3-yaml
    python3 -c "import yaml" 2>/dev/null && return 0
    # A python3 other than Debian's (e.g. pyenv) does not see python3-yaml.
    echo "installing PyPI package: pyyaml" >&2
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    python3 -m pip install --quiet pyyaml 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages pyyaml
}

# What scripts/demo.sh needs to build and run the demo on a fresh Debian
# machine: Rust (rustup, not packaged here) and a C compiler for the bundled
# SQLite and ring. The demo itself needs nothing else (no sqlite3, no browser).
need_demo_deps() {
    command -v cargo >/dev/null || {
        echo "cargo not found: install Rust first (https://rustup.rs: curl -sSf https://sh.rustup.rs | sh)" >&2
        exit 2
    }
    command -v cc >/dev/null || apt_install gcc libc6-dev
}

need_test_deps() {
    command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 2; }
    need_postgres
    # chattr (e2fsprogs) and mount: the agent tests make files immutable and
    # mount small tmpfs disks to fill them.
    # script (bsdutils): a pseudo-terminal for the progress-bar test of rollout watch.
    apt_install sqlite3 python3 e2fsprogs mount bsdutils
    need_systemd_analyze
    need_python_yaml
    need_openfeature
    need_browser
    # docs/digest_reference.py (the digest's independent re-implementation,
    # run by shared/tests/digest_reference.rs) needs the PyPI package blake3.
    python3 -c "import blake3" 2>/dev/null || {
        echo "installing PyPI package: blake3" >&2
        python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
        python3 -m pip install --quiet blake3 2>/dev/null ||
            python3 -m pip install --quiet --break-system-packages blake3
    }
    # tests/tests/fleet_grpc_client.py: a third-party gRPC client (health,
    # reflection) that the fleet tests point at the coordinator.
    python3 -c "import grpc, grpc_health.v1.health_pb2, grpc_reflection.v1alpha.reflection_pb2" 2>/dev/null || {
        echo "installing PyPI packages: grpcio grpcio-health-checking grpcio-reflection" >&2
        python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
        python3 -m pip install --quiet grpcio grpcio-health-checking grpcio-reflection 2>/dev/null ||
            python3 -m pip install --quiet --break-system-packages grpcio grpcio-health-checking grpcio-reflection
    }
}
