#!/usr/bin/env bash
# Installs what the test stages need and this machine lacks. What is already
# there is left alone; `apt-get update` runs only when a Debian package must be
# installed. Each kind of install says in one line what it installs.
#
#   scripts/setup.sh               for every stage
#   scripts/setup.sh deploy js     for those stages only
#
# Stages are those of scripts/test.sh (lint rust js deploy fuzz loadtest),
# which sources this file and calls `setup_stages` with the stages it runs.
#
# Where things come from:
#   Debian packages (apt-get, as root or through passwordless sudo):
#     redis-server redis-tools chromium haproxy prometheus (brings promtool)
#     curl shellcheck g++, and npm (which brings nodejs) only where Node.js
#     and npm are not already installed
#   pip: pyyaml jsonschema kubernetes-validate websockets grpcio grpcio-tools,
#     into python3's environment, or, where python3 is an externally managed
#     system Python (Debian's), into a virtualenv ($ROOMCAST_VENV, default
#     ~/.cache/roomcast/venv) that then goes first on PATH
#   npm ci in clients/js, gateway/tests/socketio and examples/chat-backend (its
#     socket.io test runs that example backend); cargo install cargo-fuzz --locked;
#   rustup component add rustfmt clippy
#   Not installed: the Rust toolchain, and kubectl or kustomize (`kubectl
#   kustomize` renders deploy/k8s; neither is a Debian package everywhere).
#
# Where something cannot be installed (not root and no passwordless sudo, no
# apt-get, no rustup), it installs nothing and stops with one line naming what
# is missing and what brings it. Never a skip.
#
# Environment: CHROMIUM_PATH (default /usr/bin/chromium), ROOMCAST_VENV.

SETUP_STAGES=(lint rust js deploy fuzz loadtest)
SETUP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SETUP_VENV="${ROOMCAST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/roomcast/venv}"
# import name=pip package, for every Python module the deploy stage uses.
SETUP_PY_MODULES=(yaml=pyyaml jsonschema=jsonschema kubernetes_validate=kubernetes-validate
  websockets=websockets grpc=grpcio grpc_tools=grpcio-tools)

# setup_stages STAGE...: installs what those stages (default: all) need, then
# checks that nothing is missing. Exits the shell on failure.
setup_stages() {
  local stage
  for stage in "$@"; do
    [[ " ${SETUP_STAGES[*]} " == *" $stage "* ]] || { echo "setup: unknown stage: $stage" >&2; exit 2; }
  done
  (($#)) || set -- "${SETUP_STAGES[@]}"

  _setup_scan "$@"
  if ((${#_setup_deb[@]})) && ! _setup_can_apt; then
    _setup_cannot=("${_setup_deb_why[@]}" "${_setup_cannot[@]}")
  fi
  if ((${#_setup_cannot[@]})); then
    _setup_missing "${_setup_cannot[@]}"
  fi

  if ((${#_setup_deb[@]})); then
    echo "setup: installing Debian packages: ${_setup_deb[*]}"
    _setup_run "apt-get update" "${_setup_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _setup_run "apt-get install" "${_setup_sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${_setup_deb[@]}"
    hash -r
  fi
  if ((${#_setup_rustup[@]})); then
    echo "setup: installing Rust components: ${_setup_rustup[*]}"
    _setup_run "rustup component add" rustup component add "${_setup_rustup[@]}"
  fi
  if ((_setup_py_venv)); then
    # Debian's python3 refuses pip installs (PEP 668): use a virtualenv.
    [[ -x "$SETUP_VENV/bin/python3" ]] || _setup_run "python3 -m venv" python3 -m venv "$SETUP_VENV"
    _setup_venv_on_path
    _setup_py_scan
  fi
  if ((${#_setup_pip[@]})); then
    local into=""
    [[ "$(command -v python3)" != "$SETUP_VENV/bin/python3" ]] || into=" (virtualenv ${SETUP_VENV/#"$HOME"/\~})"
    echo "setup: installing Python modules$into: ${_setup_pip[*]}"
    _setup_run "pip install" python3 -m pip install -q --disable-pip-version-check "${_setup_pip[@]}"
  fi
  local dir
  for dir in "${_setup_npm_dirs[@]}"; do
    echo "setup: installing npm packages in $dir (npm ci)"
    _setup_run "npm ci" _setup_in "$SETUP_ROOT/$dir" npm ci --no-audit --no-fund
  done
  if ((_setup_fuzz)); then
    echo "setup: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    _setup_run "cargo install cargo-fuzz" cargo install cargo-fuzz --locked
  fi

  # Whatever is still missing now was not brought by what was installed.
  _setup_scan "$@"
  local left=("${_setup_deb_why[@]}" "${_setup_cannot[@]}")
  ((${#_setup_pip[@]} == 0)) || left+=("Python modules $(_setup_py_missing) (pip: ${_setup_pip[*]})")
  for dir in "${_setup_npm_dirs[@]}"; do
    left+=("$dir/node_modules (npm ci)")
  done
  ((_setup_fuzz == 0)) || left+=("cargo-fuzz (cargo install cargo-fuzz --locked)")
  ((${#_setup_rustup[@]} == 0)) || left+=("rustup components ${_setup_rustup[*]}")
  ((${#left[@]} == 0)) || _setup_missing "${left[@]}"
}

# _setup_scan STAGE...: what those stages need and is missing, into
#   _setup_deb      Debian packages to install
#   _setup_deb_why  for each of them, "tools (Debian package package)"
#   _setup_rustup   rustup components to add
#   _setup_pip      pip packages to install; _setup_py_venv=1 when into a virtualenv
#   _setup_npm_dirs Node packages (clients/js, gateway/tests/socketio, examples/chat-backend) that need `npm ci`
#   _setup_fuzz     1 when cargo-fuzz must be installed
#   _setup_cannot   what nothing here installs, "tool (where it comes from)"
_setup_scan() {
  _setup_deb=() _setup_deb_why=() _setup_rustup=() _setup_pip=() _setup_cannot=()
  _setup_py_venv=0 _setup_fuzz=0 _setup_npm_dirs=()
  hash -r
  local stage
  if ! command -v cargo >/dev/null; then
    _setup_cannot+=("cargo (the Rust toolchain: https://rustup.rs)")
  fi
  _setup_tool cc gcc
  for stage in "$@"; do
    case "$stage" in
      lint)
        _setup_rust_component fmt rustfmt
        _setup_rust_component clippy clippy
        ;;
      rust | loadtest)
        _setup_tool redis-server redis-server
        ;;
      js)
        _setup_tool redis-server redis-server
        # The socket.io cluster tests put three nodes behind HAProxy.
        _setup_tool haproxy haproxy
        _setup_node
        local chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
        if [[ ! -x "$chromium" ]]; then
          if [[ "$chromium" == /usr/bin/chromium ]]; then
            _setup_add_deb chromium chromium
          else
            _setup_cannot+=("$chromium (CHROMIUM_PATH)")
          fi
        fi
        local pkg
        for pkg in clients/js gateway/tests/socketio examples/chat-backend; do
          # npm ci stamps node_modules/.package-lock.json; an older stamp
          # means the lock file changed since.
          local d="$SETUP_ROOT/$pkg"
          if [[ ! -f "$d/node_modules/.package-lock.json" || "$d/package-lock.json" -nt "$d/node_modules/.package-lock.json" ]]; then
            _setup_npm_dirs+=("$pkg")
          fi
        done
        ;;
      deploy)
        _setup_tool promtool prometheus
        _setup_tool prometheus prometheus
        _setup_tool haproxy haproxy
        _setup_tool redis-server redis-server
        _setup_tool redis-cli redis-tools
        _setup_tool curl curl
        _setup_tool shellcheck shellcheck
        _setup_node
        if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null; then
          _setup_cannot+=("kubectl or kustomize (no Debian package here: kubectl from the Kubernetes apt repository https://pkgs.k8s.io, or a kustomize binary on PATH)")
        fi
        _setup_python
        ;;
      fuzz)
        _setup_tool c++ g++
        if command -v cargo >/dev/null && ! cargo fuzz --version >/dev/null 2>&1; then
          _setup_fuzz=1
        fi
        ;;
    esac
  done
}

# _setup_tool TOOL PACKAGE: TOOL must be on PATH; the Debian PACKAGE brings it.
_setup_tool() {
  command -v "$1" >/dev/null || _setup_add_deb "$1" "$2"
}

# _setup_add_deb TOOL PACKAGE: PACKAGE is to be installed, for TOOL.
_setup_add_deb() {
  local i
  for i in "${!_setup_deb[@]}"; do
    if [[ "${_setup_deb[i]}" == "$2" ]]; then
      _setup_deb_why[i]="${_setup_deb_why[i]% (Debian package *}, $1 (Debian package $2)"
      return
    fi
  done
  _setup_deb+=("$2")
  _setup_deb_why+=("$1 (Debian package $2)")
}

# Node.js and npm: Debian's npm brings Debian's nodejs, so it is installed
# only where neither comes from elsewhere (nodesource, nvm, ...).
_setup_node() {
  if ! command -v node >/dev/null; then
    _setup_add_deb node npm
  elif ! command -v npm >/dev/null; then
    _setup_add_deb npm npm
  fi
}

# _setup_rust_component SUBCOMMAND COMPONENT: `cargo SUBCOMMAND` must work.
_setup_rust_component() {
  command -v cargo >/dev/null || return 0
  cargo "$1" --version >/dev/null 2>&1 && return 0
  if command -v rustup >/dev/null; then
    _setup_rustup+=("$2")
  else
    _setup_cannot+=("cargo $1 (rustup component $2)")
  fi
}

_setup_python() {
  [[ ! -x "$SETUP_VENV/bin/python3" ]] || _setup_venv_on_path
  if ! command -v python3 >/dev/null; then
    _setup_add_deb python3 python3
    _setup_add_deb "python3 -m venv" python3-venv
    _setup_pip=("${SETUP_PY_MODULES[@]#*=}")
    _setup_py_venv=1
    return
  fi
  _setup_py_scan
  ((${#_setup_pip[@]})) || return 0
  if python3 -c '
import os, sys, sysconfig
managed = sys.prefix == sys.base_prefix and os.path.isfile(
    os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed else 1)'; then
    _setup_py_venv=1
    python3 -c 'import ensurepip, venv' 2>/dev/null || _setup_add_deb "python3 -m venv" python3-venv
  elif ! python3 -m pip --version >/dev/null 2>&1; then
    _setup_add_deb pip python3-pip
  fi
}

# _setup_py_scan: the pip packages of the modules python3 cannot import.
_setup_py_scan() {
  _setup_pip=()
  local m missing
  missing=" $(_setup_py_missing) "
  for m in "${SETUP_PY_MODULES[@]}"; do
    [[ "$missing" != *" ${m%%=*} "* ]] || _setup_pip+=("${m#*=}")
  done
}

# _setup_py_missing: the import names python3 cannot find, on one line.
_setup_py_missing() {
  command -v python3 >/dev/null || { echo "${SETUP_PY_MODULES[@]%%=*}"; return; }
  python3 - "${SETUP_PY_MODULES[@]%%=*}" <<'EOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
}

_setup_venv_on_path() {
  case ":$PATH:" in
    *":$SETUP_VENV/bin:"*) ;;
    *) PATH="$SETUP_VENV/bin:$PATH"; export PATH ;;
  esac
  hash -r
}

# _setup_can_apt: apt-get is there and runs as root, directly or through
# passwordless sudo (then _setup_sudo holds the prefix).
_setup_can_apt() {
  _setup_sudo=()
  command -v apt-get >/dev/null || return 1
  ((EUID == 0)) && return 0
  command -v sudo >/dev/null && sudo -n true 2>/dev/null || return 1
  _setup_sudo=(sudo -n)
}

# _setup_missing WHAT...: the one line saying what is missing; fails.
_setup_missing() {
  local line
  line="$(printf ', %s' "$@")"
  echo "missing: ${line:2}" >&2
  exit 1
}

# _setup_run WHAT COMMAND...: runs COMMAND quietly; on failure shows its
# output and fails.
_setup_run() {
  local what="$1" log
  shift
  log="$(mktemp)"
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    rm -f "$log"
    echo "setup: $what failed" >&2
    exit 1
  fi
  rm -f "$log"
}

# _setup_in DIR COMMAND...: runs COMMAND in DIR, in a subshell.
_setup_in() (
  cd "$1" && shift && "$@"
)

_setup_sudo=()

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  path_before="$PATH"
  setup_stages "$@"
  if [[ ":$path_before:" != *":$SETUP_VENV/bin:"* && "$(command -v python3)" == "$SETUP_VENV/bin/python3" ]]; then
    echo "setup: the Python modules are in ${SETUP_VENV/#"$HOME"/\~}; put its bin/ first on PATH to run deploy/ scripts by hand"
  fi
fi
