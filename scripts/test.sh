#!/usr/bin/env bash
# Runs every test of the project. Each stage must pass; a missing tool is a
# failure, never a skip. `.ci/run` installs the tools on a fresh machine.
#
#   ./scripts/test.sh            everything
#   ./scripts/test.sh rust js    only some stages (rust, lint, js, deploy, fuzz, loadtest)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

stages=("$@")
[[ ${#stages[@]} -gt 0 ]] || stages=(lint rust js deploy fuzz loadtest)

banner() { printf '\n==== %s ====\n' "$*"; }
need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool (run .ci/run or install it)" >&2; exit 1; }
  done
}

for stage in "${stages[@]}"; do
  case "$stage" in
    lint)
      banner "format and lint"
      cargo fmt --all -- --check
      cargo clippy --workspace --all-targets --locked -- -D warnings
      ;;
    rust)
      banner "Rust tests (unit, integration, adapter conformance, cluster, RFC 6455)"
      need redis-server
      cargo test --workspace --locked
      ;;
    js)
      banner "browser client: unit tests and end-to-end tests in headless Chromium"
      need node npm chromium
      cargo build -p roomcast-gateway --locked
      (cd clients/js && { [[ -d node_modules ]] || npm ci --no-audit --no-fund; } && npm test && ROOMCAST_BIN="$PWD/../../target/debug/roomcast" npm run test:e2e)
      ;;
    deploy)
      banner "deployment files and the local cluster topology"
      cargo build -p roomcast-gateway --locked
      ROOMCAST_BIN="$PWD/target/debug/roomcast" deploy/check.sh
      ROOMCAST_BIN="$PWD/target/debug/roomcast" deploy/local/test-cluster.sh
      ;;
    fuzz)
      banner "fuzz smoke run"
      fuzz/smoke.sh
      ;;
    loadtest)
      banner "load-test harness smoke run"
      cargo build -p roomcast-gateway -p roomcast-loadtest --locked
      target/debug/roomcast-loadtest smoke --roomcast-bin target/debug/roomcast
      ;;
    *)
      echo "unknown stage: $stage" >&2
      exit 2
      ;;
  esac
done
banner "all stages passed: ${stages[*]}"
