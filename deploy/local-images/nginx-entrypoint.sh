#!/bin/bash
# Entry point of the nginx stand-in: each /etc/nginx/templates/NAME.template becomes
# /etc/nginx/conf.d/NAME with the environment's variables substituted (only variables that are set,
# so nginx's own $variables stay), then nginx runs.
set -euo pipefail
# envsubst's list of variables to replace, e.g. '${AUTH_UPSTREAM} ${HOME} ...' (literal dollars).
defined=""
while IFS='=' read -r name _; do
  defined="$defined \${$name}"
done < <(env)
for t in /etc/nginx/templates/*.template; do
  [ -e "$t" ] || continue
  out="/etc/nginx/conf.d/$(basename "$t" .template)"
  envsubst "$defined" <"$t" >"$out"
  echo "rendered $t to $out"
done
exec "$@"
