#!/usr/bin/env bash
# Makes sure a Docker engine answers: installs Debian's docker.io when dockerd is missing, starts
# dockerd when none runs (log: /var/log/chat-dockerd.log), waits up to 30 s. Used by
# scripts/compose-up.sh and scripts/test.sh.
set -euo pipefail
docker info >/dev/null 2>&1 && exit 0
if ! command -v dockerd >/dev/null 2>&1; then
  echo "== installing Docker (Debian's docker.io)"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
docker info >/dev/null 2>&1 && exit 0
echo "== starting dockerd"
nohup dockerd >/var/log/chat-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "the Docker engine did not start: see /var/log/chat-dockerd.log" >&2
exit 1
