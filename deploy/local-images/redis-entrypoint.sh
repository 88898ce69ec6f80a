#!/bin/bash
# Entry point of the Redis stand-in: like the official image, which is built with protected mode
# off (containers reach Redis over the container network, not loopback), add --protected-mode no
# to a redis-server command line that does not set it.
set -euo pipefail
if [ "${1:-}" = redis-server ] && [[ " $* " != *" --protected-mode "* ]]; then
  set -- "$@" --protected-mode no
fi
exec "$@"
