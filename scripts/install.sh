#!/usr/bin/env bash
# The one install recipe: `make`, CI (.ci/run) and every docker/ image call this script.
# Usage: scripts/install.sh [VENV_DIR]   (default .venv; VENV_DIR=system installs into the current Python)
# Installs the project with every extra and the dev tools at the exact versions in constraints.txt (the tested set;
# pyproject.toml only holds ranges). EXTRAS=convert,dev installs fewer extras.
# TVM_WHEEL=path.whl installs a TVM built elsewhere (docker/vulkan.Dockerfile builds one with USE_VULKAN=ON) in place
# of PyPI's apache-tvm; its version must fall in pyproject.toml's apache-tvm range. An mlc-ai TVM build already in
# the venv (same `tvm` module) is detected and kept: apache-tvm is then not installed over it.
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
extras="${EXTRAS:-all,dev}"
constraints=constraints.txt
if [ -n "${TVM_WHEEL:-}" ]; then
  echo "install.sh: installing TVM from ${TVM_WHEEL} instead of PyPI's apache-tvm"
  "${pip_cmd[@]}" install -q --no-deps "${TVM_WHEEL}"
  # the tested set minus the apache-tvm pin, so pip keeps the wheel just installed
  constraints="$(mktemp)"
  trap 'rm -f "$constraints"' EXIT
  grep -v '^apache-tvm==' constraints.txt > "$constraints"
fi
mlc="$("${pip_cmd[@]}" list --format=freeze 2>/dev/null | grep -i '^mlc-ai' || true)"
if [ -n "$mlc" ] && [ -z "${TVM_WHEEL:-}" ]; then
  # Both provide the `tvm` module: installing apache-tvm would overwrite the mlc-ai build's files.
  echo "install.sh: found the mlc-ai TVM build ${mlc}; keeping it (apache-tvm is not installed over it)"
  reqs="$("${pip_cmd[0]}" - "$extras" <<'PY'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras, todo, reqs = set(), list(sys.argv[1].split(",")), list(project["dependencies"])
while todo:
    name = todo.pop()
    if name in extras:
        continue
    extras.add(name)
    for req in project["optional-dependencies"][name]:
        inner = re.fullmatch(r"harmonizer-deploy\[(.*)\]", req)
        todo.extend(inner.group(1).split(",")) if inner else reqs.append(req)
print("\n".join(r for r in reqs if not r.startswith("apache-tvm") or r.startswith("apache-tvm-ffi")))
PY
)"
  mapfile -t reqs_array <<< "$reqs"
  "${pip_cmd[@]}" install -q -c constraints.txt "${reqs_array[@]}"
  "${pip_cmd[@]}" install -q --no-deps -e .
  # the one expected complaint: apache-tvm, whose `tvm` module the mlc-ai build provides
  problems="$("${pip_cmd[@]}" check 2>&1 | grep -v "requires apache-tvm, which is not installed" \
              | grep -v "^No broken" || true)"
  [ -z "$problems" ] || { echo "$problems"; exit 1; }
else
  "${pip_cmd[@]}" install -q -c "$constraints" -e ".[${extras}]"
  if [ -n "${TVM_WHEEL:-}" ]; then
    want="$(basename "${TVM_WHEEL}" | cut -d- -f2)"
    have="$("${pip_cmd[@]}" show apache-tvm 2>/dev/null | sed -n 's/^Version: //p')"
    [ "$want" = "$have" ] || { echo "install.sh: pip replaced ${TVM_WHEEL} (${want}) with apache-tvm ${have}:" \
      "the wheel's version is outside pyproject.toml's apache-tvm range" >&2; exit 1; }
  fi
  "${pip_cmd[@]}" check >/dev/null || { "${pip_cmd[@]}" check; exit 1; }
fi
echo "install.sh: installed into ${venv} (extras ${extras}, versions from constraints.txt)"
