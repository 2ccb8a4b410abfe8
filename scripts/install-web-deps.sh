#!/usr/bin/env bash
# Everything the browser targets (webgpu, wasm) need beyond scripts/install.sh, for CI and developers:
#   Debian: emscripten (links model.wasm), chromium (headless WebGPU/wasm runs); npm: TVM's JS runtime (pinned);
#   then TVM's web runtime objects are built once into the cache (~3 min on 2 cores).
# Usage: scripts/install-web-deps.sh [VENV_DIR]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python="$venv/bin/python"
[ -x "$python" ] || python="${PYTHON:-python3}"

need=()
command -v emcc >/dev/null || need+=(emscripten)
command -v chromium >/dev/null || need+=(chromium)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install-web-deps.sh: apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "install-web-deps.sh: missing Debian packages: ${need[*]} — run: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
unset EM_CACHE  # Debian's emscripten ships a frozen cache

# npm package (pinned) and the runtime objects, both into ~/.cache/harmonizer-deploy (HARMONIZER_DEPLOY_CACHE)
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" "$python" - <<'PY'
from harmonizer_deploy.web.jsdeps import tvmjs_bundle
from harmonizer_deploy.web.toolchain import runtime_home
print("install-web-deps.sh: tvmjs", tvmjs_bundle())
print("install-web-deps.sh: TVM web runtime objects", runtime_home())
PY
