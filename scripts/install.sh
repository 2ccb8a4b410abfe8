#!/usr/bin/env bash
# The one install recipe: `make`, CI (.ci/run) and every docker/ image call this script.
# Usage: scripts/install.sh [VENV_DIR]   (default .venv; VENV_DIR=system installs into the current Python)
# TVM_WHEEL=path.whl replaces PyPI's apache-tvm with a TVM built elsewhere (docker/vulkan.Dockerfile builds one
# with USE_VULKAN=ON); its version differs from the pin, which `pip check` is then told to accept.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python="${PYTHON:-python3}"

# Debian packages the CPU path needs: a venv-capable Python and a C++ compiler (TVM links the model library).
need=()
"$python" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install.sh: apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "install.sh: missing Debian packages: ${need[*]} — run: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi

if [ "$venv" = system ]; then
  pip_cmd=("$python" -m pip)
else
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  pip_cmd=("$venv/bin/python" -m pip)
fi
"${pip_cmd[@]}" install -q --upgrade "pip==26.3"
"${pip_cmd[@]}" install -q -e ".[dev]"
if [ -n "${TVM_WHEEL:-}" ]; then
  echo "install.sh: replacing apache-tvm with ${TVM_WHEEL}"
  "${pip_cmd[@]}" install -q --no-deps --force-reinstall "${TVM_WHEEL}"
  # the only acceptable complaint: our apache-tvm pin vs the custom build's version
  problems="$("${pip_cmd[@]}" check 2>&1 | grep -v "apache-tvm==" | grep -v "^No broken" || true)"
  [ -z "$problems" ] || { echo "$problems"; exit 1; }
else
  "${pip_cmd[@]}" check >/dev/null || { "${pip_cmd[@]}" check; exit 1; }
fi
echo "install.sh: installed into ${venv}"
