#!/usr/bin/env bash
# The docker-compose topology as plain processes on one machine, for trying a
# cluster and for CI where no container engine runs:
#
#   redis-server            one, on 127.0.0.1
#   roomcast x NODES        --adapter redis, each on its own HTTP and gRPC port
#   haproxy                 WebSocket (HTTP/1.1 upgrade) and gRPC (h2c) entry
#                           points, round-robin, no sticky sessions, /readyz checks
#   prometheus              scrapes every node every second, loads the alert rules
#
#   deploy/local/run-cluster.sh             # runs until Ctrl-C, then tears down
#
# Everything listens on 127.0.0.1. Ports are free ones picked at start unless
# given. When all is ready, $CLUSTER_DIR/cluster.env holds the addresses (a
# shell file: source it) and $CLUSTER_DIR/ready exists. On SIGINT/SIGTERM the
# gateways drain (SIGTERM), then the rest stops, and nothing is left running.
#
# Environment:
#   ROOMCAST_BIN           gateway binary (default target/debug/roomcast)
#   NODES                  number of gateway nodes (default 3)
#   CLUSTER_DIR            state and logs (default: a new temporary directory,
#                          removed at exit unless KEEP_CLUSTER_DIR=1)
#   ROOMCAST_CONFIG_FILE   node config (default deploy/k8s/base/roomcast.toml)
#   DRAIN_TIMEOUT          the nodes' --drain-timeout, in seconds (default 5s)
#   LB_PORT LB_GRPC_PORT LB_STATS_PORT PROM_PORT REDIS_PORT   fixed ports
#   NODE_ARGS              extra flags for every node
#   ADAPTER                the nodes' --adapter (default redis; memory makes
#                          isolated nodes, only useful to debug this script)
# Needs: redis-server, haproxy, prometheus (Debian packages of those names).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${ROOMCAST_BIN:-$ROOT/target/debug/roomcast}"
NODES="${NODES:-3}"
CONFIG_FILE="${ROOMCAST_CONFIG_FILE:-$ROOT/deploy/k8s/base/roomcast.toml}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-5s}"
ADAPTER="${ADAPTER:-redis}"
OWN_DIR=0
if [[ -z "${CLUSTER_DIR:-}" ]]; then
  CLUSTER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/roomcast-cluster.XXXXXX")"
  OWN_DIR=1
fi
mkdir -p "$CLUSTER_DIR"
rm -f "$CLUSTER_DIR/ready" "$CLUSTER_DIR/cluster.env" "$CLUSTER_DIR"/node-*.exit

log() { echo "run-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

for tool in redis-server redis-cli haproxy prometheus curl; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install redis-server haproxy prometheus curl)"
done
[[ -x "$BIN" ]] || die "no gateway binary at $BIN (cargo build -p roomcast-gateway, or set ROOMCAST_BIN)"
[[ -f "$CONFIG_FILE" ]] || die "no config file $CONFIG_FILE"

# Ports picked now are free now; bind races with other programs are possible
# but not with this script, which asks for all of them at once.
pick_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r -a FREE <<<"$(pick_ports $((5 + 2 * NODES)))"
REDIS_PORT="${REDIS_PORT:-${FREE[0]}}"
LB_PORT="${LB_PORT:-${FREE[1]}}"
LB_GRPC_PORT="${LB_GRPC_PORT:-${FREE[2]}}"
LB_STATS_PORT="${LB_STATS_PORT:-${FREE[3]}}"
PROM_PORT="${PROM_PORT:-${FREE[4]}}"
NODE_HTTP=() NODE_GRPC=()
for ((i = 1; i <= NODES; i++)); do
  NODE_HTTP[i]="${FREE[$((3 + 2 * i))]}"
  NODE_GRPC[i]="${FREE[$((4 + 2 * i))]}"
done

# name -> pid of everything started here, in start order.
NAMES=() PIDS=()
started() { NAMES+=("$1"); PIDS+=("$2"); }

teardown() {
  local code=$?
  set +e
  trap - EXIT INT TERM
  rm -f "$CLUSTER_DIR/ready"
  log "stopping"
  local i pid
  # Everyone gets the drain timeout plus a margin, then is killed.
  local drain=${DRAIN_TIMEOUT%s}
  [[ "$drain" =~ ^[0-9]+$ ]] || drain=30
  local deadline=$((SECONDS + drain + 10))
  # Gateways first, with SIGTERM, so they drain their clients (1001).
  for i in "${!NAMES[@]}"; do
    [[ -n "${PIDS[i]}" && "${NAMES[i]}" == node-* ]] && kill -TERM "${PIDS[i]}" 2>/dev/null
  done
  # Then the load balancer, Prometheus and Redis, once the nodes are gone.
  for i in "${!NAMES[@]}"; do
    [[ -n "${PIDS[i]}" && "${NAMES[i]}" == node-* ]] || continue
    while kill -0 "${PIDS[i]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  done
  for i in "${!NAMES[@]}"; do
    [[ -n "${PIDS[i]}" && "${NAMES[i]}" != node-* ]] && kill -TERM "${PIDS[i]}" 2>/dev/null
  done
  for i in "${!NAMES[@]}"; do
    pid="${PIDS[i]}"
    [[ -n "$pid" ]] || continue
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "${NAMES[i]} (pid $pid) did not stop in time; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if ((OWN_DIR)) && [[ "${KEEP_CLUSTER_DIR:-0}" != 1 ]]; then
    rm -rf "$CLUSTER_DIR"
  elif ((OWN_DIR)); then
    log "logs kept in $CLUSTER_DIR"
  fi
  exit "$code"
}
trap teardown EXIT
trap 'exit 0' INT TERM

wait_until() { # wait_until SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out waiting for $what"
    sleep 0.2
  done
}

http_ok() { [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1")" == 200 ]]; }

# ------------------------------------------------------------------ redis
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
  --dir "$CLUSTER_DIR" --logfile "$CLUSTER_DIR/redis.log" &
started redis $!
wait_until 10 "redis on $REDIS_PORT" redis-cli -p "$REDIS_PORT" ping

# ------------------------------------------------------------------ gateways
for ((i = 1; i <= NODES; i++)); do
  # shellcheck disable=SC2086  # NODE_ARGS is a list of flags
  "$BIN" --config "$CONFIG_FILE" \
    --listen "127.0.0.1:${NODE_HTTP[i]}" --grpc-listen "127.0.0.1:${NODE_GRPC[i]}" \
    --adapter "$ADAPTER" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
    --node-id "node-$i" --drain-timeout "$DRAIN_TIMEOUT" --log-format json \
    ${NODE_ARGS:-} >"$CLUSTER_DIR/node-$i.log" 2>&1 &
  started "node-$i" $!
done
for ((i = 1; i <= NODES; i++)); do
  wait_until 30 "node-$i /readyz" http_ok "http://127.0.0.1:${NODE_HTTP[i]}/readyz"
done

# ------------------------------------------------------------------ haproxy
# Same settings as deploy/haproxy/haproxy.cfg, with round-robin so that a
# test can predict the spread, and faster health checks. Each proxied
# connection takes two descriptors, so maxconn follows this shell's limit.
LB_MAXCONN=$((($(ulimit -n) - 100) / 2))
((LB_MAXCONN > 50000)) && LB_MAXCONN=50000
{
  cat <<EOF
global
    maxconn $LB_MAXCONN
defaults
    mode http
    option dontlognull
    timeout connect 2s
    option redispatch
    retries 2
    timeout http-request 10s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout client-fin 5s
    timeout server-fin 5s
frontend ws
    bind 127.0.0.1:$LB_PORT
    http-request deny deny_status 404 if { path /metrics }
    default_backend gateways
backend gateways
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fall 1 rise 1
EOF
  for ((i = 1; i <= NODES; i++)); do
    echo "    server node-$i 127.0.0.1:${NODE_HTTP[i]}"
  done
  cat <<EOF
frontend grpc
    bind 127.0.0.1:$LB_GRPC_PORT proto h2
    default_backend grpc_gateways
backend grpc_gateways
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
EOF
  for ((i = 1; i <= NODES; i++)); do
    echo "    server node-$i 127.0.0.1:${NODE_GRPC[i]} proto h2 check port ${NODE_HTTP[i]} check-proto h1 inter 500ms fall 1 rise 1"
  done
  cat <<EOF
frontend stats
    bind 127.0.0.1:$LB_STATS_PORT
    http-request use-service prometheus-exporter if { path /metrics }
    stats enable
    stats uri /
EOF
} >"$CLUSTER_DIR/haproxy.cfg"
haproxy -c -q -f "$CLUSTER_DIR/haproxy.cfg" || die "generated haproxy.cfg is invalid"
haproxy -db -W -f "$CLUSTER_DIR/haproxy.cfg" >"$CLUSTER_DIR/haproxy.log" 2>&1 &
started haproxy $!
wait_until 10 "haproxy on $LB_PORT" http_ok "http://127.0.0.1:$LB_PORT/readyz"

# ------------------------------------------------------------------ prometheus
{
  cat <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  external_labels:
    cluster: roomcast-local
rule_files:
  - $ROOT/deploy/prometheus/rules/*.yml
scrape_configs:
  - job_name: roomcast
    static_configs:
EOF
  for ((i = 1; i <= NODES; i++)); do
    echo "      - targets: [\"127.0.0.1:${NODE_HTTP[i]}\"]"
    echo "        labels: {node: node-$i}"
  done
  cat <<EOF
  - job_name: haproxy
    static_configs:
      - targets: ["127.0.0.1:$LB_STATS_PORT"]
EOF
} >"$CLUSTER_DIR/prometheus.yml"
promtool check config "$CLUSTER_DIR/prometheus.yml" >/dev/null 2>&1 || die "generated prometheus.yml is invalid"
prometheus --config.file="$CLUSTER_DIR/prometheus.yml" \
  --storage.tsdb.path="$CLUSTER_DIR/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" \
  >"$CLUSTER_DIR/prometheus.log" 2>&1 &
started prometheus $!
wait_until 30 "prometheus on $PROM_PORT" http_ok "http://127.0.0.1:$PROM_PORT/-/ready"

# ------------------------------------------------------------------ ready
{
  echo "CLUSTER_DIR=$CLUSTER_DIR"
  echo "NODES=$NODES"
  echo "REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  echo "REDIS_PID=${PIDS[0]}"
  echo "LB_HTTP=127.0.0.1:$LB_PORT"
  echo "LB_GRPC=127.0.0.1:$LB_GRPC_PORT"
  echo "LB_STATS=127.0.0.1:$LB_STATS_PORT"
  echo "PROM_URL=http://127.0.0.1:$PROM_PORT"
  for i in "${!NAMES[@]}"; do
    n="${NAMES[i]}"
    [[ "$n" == node-* ]] || continue
    k="${n#node-}"
    echo "NODE_${k}_HTTP=127.0.0.1:${NODE_HTTP[k]}"
    echo "NODE_${k}_GRPC=127.0.0.1:${NODE_GRPC[k]}"
    echo "NODE_${k}_PID=${PIDS[i]}"
  done
} >"$CLUSTER_DIR/cluster.env.tmp"
mv "$CLUSTER_DIR/cluster.env.tmp" "$CLUSTER_DIR/cluster.env"
touch "$CLUSTER_DIR/ready"
log "ready: ws://127.0.0.1:$LB_PORT/ws  grpc 127.0.0.1:$LB_GRPC_PORT  prometheus http://127.0.0.1:$PROM_PORT  (details: $CLUSTER_DIR/cluster.env)"

# Watch the children. A gateway that exits (a drain test stops one on
# purpose) leaves its exit status in node-N.exit; anything else exiting is
# fatal.
while sleep 0.5; do
  for i in "${!NAMES[@]}"; do
    pid="${PIDS[i]}"
    [[ -n "$pid" ]] || continue
    kill -0 "$pid" 2>/dev/null && continue
    status=0
    wait "$pid" || status=$?
    PIDS[i]=""
    if [[ "${NAMES[i]}" == node-* ]]; then
      echo "$status" >"$CLUSTER_DIR/${NAMES[i]}.exit"
      log "${NAMES[i]} exited with status $status"
    else
      die "${NAMES[i]} exited with status $status (log: $CLUSTER_DIR/${NAMES[i]}.log)"
    fi
  done
done
