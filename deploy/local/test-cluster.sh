#!/usr/bin/env bash
# CI test of the cluster topology without containers: starts
# deploy/local/run-cluster.sh (Redis, three roomcast nodes, HAProxy,
# Prometheus), runs deploy/local/test_cluster.py against it, and tears it all
# down whatever happens.
#
#   cargo build -p roomcast-gateway && deploy/local/test-cluster.sh
#
# Environment: ROOMCAST_BIN (default target/debug/roomcast), and everything
# run-cluster.sh reads. Needs: apt redis-server haproxy prometheus curl;
# pip websockets grpcio grpcio-tools.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CLUSTER_DIR
CLUSTER_DIR="$(mktemp -d "${TMPDIR:-/tmp}/roomcast-cluster-test.XXXXXX")"
CLUSTER_PID=""

finish() {
  local code=$?
  if [[ -n "$CLUSTER_PID" ]] && kill -0 "$CLUSTER_PID" 2>/dev/null; then
    kill -TERM "$CLUSTER_PID"
    wait "$CLUSTER_PID" 2>/dev/null || true
  fi
  if [[ $code != 0 ]]; then
    for f in "$CLUSTER_DIR"/*.log; do
      [[ -f "$f" ]] || continue
      echo "----- last lines of $(basename "$f")"
      tail -n 25 "$f"
    done
  fi
  rm -rf "$CLUSTER_DIR"
  exit "$code"
}
trap finish EXIT

"$ROOT/deploy/local/run-cluster.sh" &
CLUSTER_PID=$!

deadline=$((SECONDS + 90))
until [[ -f "$CLUSTER_DIR/ready" ]]; do
  kill -0 "$CLUSTER_PID" 2>/dev/null || { echo "run-cluster.sh exited before the cluster was ready"; exit 1; }
  ((SECONDS < deadline)) || { echo "cluster not ready after 90s"; exit 1; }
  sleep 0.3
done

python3 "$ROOT/deploy/local/test_cluster.py" "$CLUSTER_DIR/cluster.env"
