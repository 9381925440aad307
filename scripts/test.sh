#!/usr/bin/env bash
# Runs every test of the project. Each stage must pass. First it installs
# what the requested stages need and the machine lacks (scripts/setup.sh);
# what it cannot install is a failure, never a skip.
#
#   ./scripts/test.sh            everything
#   ./scripts/test.sh rust js    only some stages (lint, rust, js, deploy, fuzz, loadtest)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

stages=("$@")
[[ ${#stages[@]} -gt 0 ]] || stages=("${SETUP_STAGES[@]}")
setup_stages "${stages[@]}"

banner() { printf '\n==== %s ====\n' "$*"; }

for stage in "${stages[@]}"; do
  case "$stage" in
    lint)
      banner "format and lint"
      cargo fmt --all -- --check
      cargo clippy --workspace --all-targets --locked -- -D warnings
      ;;
    rust)
      banner "Rust tests (unit, integration, adapter conformance, cluster, RFC 6455)"
      cargo test --workspace --locked
      ;;
    js)
      banner "browser client: unit tests and end-to-end tests in headless Chromium"
      cargo build -p roomcast-gateway --locked
      (cd clients/js && npm test && ROOMCAST_BIN="$PWD/../../target/debug/roomcast" npm run test:e2e)
      banner "socket.io: socket.io-client 2.x and 4.x, in Node and in headless Chromium"
      (cd gateway/tests/socketio && ROOMCAST_BIN="$PWD/../../../target/debug/roomcast" npm test)
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
