#!/usr/bin/env bash
# Reproduce the browser comparison: tvm-wasm (1 thread), tvm-wasm-mt (2 threads: the page's + 1 Web Worker) and
# tvm-webgpu against onnxruntime-web (wasm on 1 and 2 threads, and
# its webgpu EP) on the same model.onnx in the same headless Chromium (SwiftShader's WebGPU adapter here), rows
# interleaved, native onnxruntime for reference. MODEL=default (the 16x64 model) or bach-doodle (the Doodle's
# doodle-33x128). Results: bench/results/web-<name>.{json,md,png}. Needs `make web-setup` first.
set -euo pipefail
cd "$(dirname "$0")/.."
HD="${HD:-.venv/bin/harmonizer-deploy}"
MODEL="${MODEL:-default}"
BUILD="${BUILD:-build/web-$MODEL}"
REPEATS="${REPEATS:-10}"
case "$MODEL" in default) NAME="${NAME:-web-default}";; *) NAME="${NAME:-web-doodle-33x128}";; esac
WEBGPU="${WEBGPU:-$([ "$MODEL" = default ] && echo 1 || echo 0)}"

"$HD" convert "$MODEL" -o "$BUILD/model.onnx"
targets=(wasm wasm-mt)
[ "$WEBGPU" = 1 ] && targets+=(webgpu)
backends=(--backend onnxruntime --backend ort-web-wasm-1t --backend ort-web-wasm-2t)
for t in "${targets[@]}"; do
  "$HD" compile "$BUILD/model.onnx" --target "$t" -o "$BUILD/$t"
  "$HD" verify "$BUILD/$t" --target "$t"
  backends+=(--backend "tvm-$t")
done
[ "$WEBGPU" = 1 ] && backends+=(--backend ort-web-webgpu)
"$HD" bench --build-dir "$BUILD" "${backends[@]}" --batch 1 --time 32 --repeats "$REPEATS" --harmonize-repeats 0 \
  --name "$NAME" --no-build
