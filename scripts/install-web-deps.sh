#!/usr/bin/env bash
# Everything the browser targets (webgpu, wasm) need beyond scripts/install.sh, for CI and developers:
#   Debian: emscripten (links model.wasm), chromium (headless WebGPU/wasm runs); npm (pinned): TVM's JS runtime,
#   onnxruntime-web, @tonejs/midi;
#   then TVM's web runtime objects (one-thread and threaded) are built once into the cache (a minute or two each on 2 cores).
# Usage: scripts/install-web-deps.sh [VENV_DIR]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python="$venv/bin/python"
[ -x "$python" ] || python="${PYTHON:-python3}"

# Debian 12 packages; emscripten is pinned (the runtime objects and the link depend on its LLVM). Chromium is
# not pinned: Debian replaces it with every security update and keeps no old versions; any Chromium >= 113
# has WebGPU. node-acorn is what emscripten's JS optimizer needs (found through NODE_PATH=/usr/share/nodejs).
EMSCRIPTEN_VERSION="3.1.6~dfsg-5"
MIN_CHROMIUM=113
need=()
[ "$(dpkg-query -W -f='${Version}' emscripten 2>/dev/null)" = "$EMSCRIPTEN_VERSION" ] \
  || need+=("emscripten=$EMSCRIPTEN_VERSION")
[ -d /usr/share/nodejs/acorn ] || need+=(node-acorn)
command -v chromium >/dev/null || need+=(chromium)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install-web-deps.sh: apt-get install ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
      >/dev/null
  else
    echo "install-web-deps.sh: missing Debian packages: ${need[*]} — run: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
chromium_major="$(chromium --version 2>/dev/null | sed -n 's/^Chromium \([0-9]*\).*/\1/p')"
if [ -z "$chromium_major" ] || [ "$chromium_major" -lt "$MIN_CHROMIUM" ]; then
  echo "install-web-deps.sh: chromium ${chromium_major:-?} has no WebGPU; need >= $MIN_CHROMIUM (apt-get install chromium)" >&2
  exit 1
fi
unset EM_CACHE  # Debian's emscripten ships a frozen cache

# npm package (pinned) and the runtime objects, both into ~/.cache/harmonizer-deploy (HARMONIZER_DEPLOY_CACHE)
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" "$python" - <<'PY'
from harmonizer_deploy.web.jsdeps import ort_web_dist, tonejs_midi_dir, tvmjs_bundle
from harmonizer_deploy.compiler.web.toolchain import runtime_home
print("install-web-deps.sh: tvmjs", tvmjs_bundle())
print("install-web-deps.sh: onnxruntime-web (the bench's browser peer)", ort_web_dist())
print("install-web-deps.sh: @tonejs/midi (the page's MIDI reader/writer)", tonejs_midi_dir())
print("install-web-deps.sh: TVM web runtime objects", runtime_home())
print("install-web-deps.sh: TVM web runtime objects for threads (wasm-mt)", runtime_home(threads=True))
PY
