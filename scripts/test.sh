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

ensure_postgres() {
  if port_open 5432; then return 0; fi
  log "PostgreSQL is down: starting it"
  if ! ls /etc/postgresql >/dev/null 2>&1; then apt_install postgresql; fi
  local v
  v=$(ls /etc/postgresql | head -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
  if ! wait_port 5432; then
    echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
    return 1
  fi
  # Tests use trust auth as user postgres on database "test".
  runuser -u postgres -- psql -qtAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
    || runuser -u postgres -- createdb test
}

ensure_redis() {
  if port_open 6379; then return 0; fi
  log "Redis is down: starting it"
  have redis-server || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_port 6379 || { echo "Redis did not come up on 127.0.0.1:6379" >&2; return 1; }
}

ensure_nats() {
  if port_open 4222; then return 0; fi
  log "NATS is down: starting it"
  [ -x /usr/sbin/nats-server ] || apt_install nats-server
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server
  wait_port 4222 || { echo "NATS did not come up on 127.0.0.1:4222" >&2; return 1; }
}

ensure_postgres
ensure_redis
ensure_nats

if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

log "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log "build binaries (the end-to-end tests run them)"
cargo build --workspace --bins --locked

log "tests"
cargo nextest run --workspace --locked --no-fail-fast "$@"
