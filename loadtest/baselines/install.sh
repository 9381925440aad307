#!/usr/bin/env bash
# Installs the Node baselines of the load-test harness from the npm registry.
# The lock files carry exact versions and integrity hashes but no registry
# host: npm resolves each package from whatever registry is configured.
set -euo pipefail
cd "$(dirname "$0")"
for dir in ws socketio; do
  echo "installing baseline $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
done
