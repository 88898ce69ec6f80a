#!/usr/bin/env bash
# Runs the microservices for chat-bench: auth, message-store, presence and two ws-edge instances
# (release builds) on PostgreSQL and Redis, behind the compose gateway's nginx configuration.
#   scripts/bench-services.sh            # then, in another shell:
#   chat-bench dm --api http://127.0.0.1:28080 --ws ws://127.0.0.1:28084,ws://127.0.0.1:28085 ...
# Ctrl-C stops everything. PG_URL and REDIS_URL override the local servers.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/chat-backend-target}"
cargo build --release -p chat-auth -p chat-message-store -p chat-presence -p chat-ws-edge -p chat-bench
bin="$CARGO_TARGET_DIR/release"
pg="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
redis="${REDIS_URL:-redis://127.0.0.1:6379}"
run=$(mktemp -d /tmp/chat-bench-services.XXXXXX)
psql "$pg" -qc 'DROP SCHEMA IF EXISTS bench_auth CASCADE; DROP SCHEMA IF EXISTS bench_msg CASCADE' >/dev/null

common=(BUS_URL="$redis" AUTH_URL=http://127.0.0.1:27081 RUST_LOG=warn
  CHAT_INTERNAL_TOKEN="bench-internal-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  AUTH_KEY_ENCRYPTION_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
  BUS_SIGNING_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
  CHAT_REGISTER_MAX_PER_IP=1000000 CHAT_SEND_RATE_PER_SEC=100000 CHAT_SEND_BURST=100000
  CHAT_CREATE_PER_MIN=1000000 CHAT_CREATE_BURST=1000000 CHAT_LOGIN_MAX_ATTEMPTS_PER_IP=1000000)
pids=()
start() { # name log env...
  local name=$1; shift
  env "${common[@]}" "$@" "$bin/$name" >>"$run/$name.log" 2>&1 &
  pids+=($!)
}
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
wait_ready() { for _ in $(seq 1 100); do curl -sf "http://$1/readyz" >/dev/null && return 0; sleep 0.2; done; echo "$1 not ready" >&2; return 1; }

start chat-auth AUTH_LISTEN=127.0.0.1:28081 AUTH_INTERNAL_LISTEN=127.0.0.1:27081 AUTH_ADMIN_LISTEN=127.0.0.1:29081 DATABASE_URL="$pg" DATABASE_SCHEMA=bench_auth
wait_ready 127.0.0.1:29081
start chat-message-store MESSAGE_STORE_LISTEN=127.0.0.1:28082 MESSAGE_STORE_INTERNAL_LISTEN=127.0.0.1:27082 MESSAGE_STORE_ADMIN_LISTEN=127.0.0.1:29082 \
  DATABASE_URL="$pg" DATABASE_SCHEMA=bench_msg
start chat-presence PRESENCE_LISTEN=127.0.0.1:28083 PRESENCE_INTERNAL_LISTEN=127.0.0.1:27083 PRESENCE_ADMIN_LISTEN=127.0.0.1:29083 PRESENCE_KEY_PREFIX=bench:presence
wait_ready 127.0.0.1:29082
wait_ready 127.0.0.1:29083
for i in 1 2; do
  start chat-ws-edge WS_EDGE_LISTEN=127.0.0.1:2808$((3 + i)) WS_EDGE_ADMIN_LISTEN=127.0.0.1:2908$((3 + i)) \
    WS_EDGE_ID="bench-edge$i" MESSAGE_STORE_URL=http://127.0.0.1:27082 PRESENCE_URL=http://127.0.0.1:27083
done
wait_ready 127.0.0.1:29084
wait_ready 127.0.0.1:29085

# The template's ${...} placeholders are literal here (envsubst-style), not shell expansions.
# shellcheck disable=SC2016
sed -e 's/${AUTH_UPSTREAM}/127.0.0.1:28081/' -e 's/${MESSAGE_STORE_UPSTREAM}/127.0.0.1:28082/' \
  -e 's/${PRESENCE_UPSTREAM}/127.0.0.1:28083/' -e 's/${WS_EDGE_UPSTREAM}/127.0.0.1:28084; server 127.0.0.1:28085/' \
  -e 's/${GATEWAY_LISTEN}/127.0.0.1:28080/' \
  -e "s|\${GATEWAY_ACCESS_LOG}|off|" -e "s|\${GATEWAY_DOCS_ROOT}|$PWD/deploy/openapi|" \
  -e "s|\${GATEWAY_WEB_ROOT}|$PWD/web|" deploy/nginx/templates/default.conf.template >"$run/default.conf"
sed -i 's/access_log off chat_gateway;/access_log off;/' "$run/default.conf"
cat >"$run/nginx.conf" <<CONF
daemon off; pid $run/nginx.pid; error_log $run/nginx-error.log warn;
worker_processes 1; events { worker_connections 20000; }
http { client_body_temp_path $run/body; proxy_temp_path $run/proxy; include $run/default.conf; }
CONF
/usr/sbin/nginx -p "$run" -c "$run/nginx.conf" &
pids+=($!)
echo "gateway http://127.0.0.1:28080, edges ws://127.0.0.1:28084 ws://127.0.0.1:28085"
echo "pids: auth ${pids[0]} message-store ${pids[1]} presence ${pids[2]} edges ${pids[3]} ${pids[4]}; logs in $run"
wait
