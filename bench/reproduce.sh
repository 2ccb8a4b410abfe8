#!/usr/bin/env bash
# Reproduce the README's CPU performance table on this machine:
# onnxruntime and TensorFlow vs TVM (dynamic shapes, hand schedules) vs TVM (static shapes: tuned records when
# targets/tuning/ has some for this CPU, hand schedules for the rest), plus end-to-end harmonize per backend.
# Results: bench/results/cpu-<mcpu>.{json,md,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
HD="${HD:-.venv/bin/harmonizer-deploy}"
BUILD="${BUILD:-build}"
mcpu=$(.venv/bin/python -c 'from tvm.target import codegen; print(codegen.llvm_get_system_cpu())')

"$HD" convert -o "$BUILD/model.onnx"
"$HD" compile "$BUILD/model.onnx" --target cpu -o "$BUILD/cpu"
for batch in 1 8; do
  "$HD" compile "$BUILD/model.onnx" --target cpu --batch "$batch" --time 32 -o "$BUILD/cpu-b$batch"
  "$HD" verify "$BUILD/cpu-b$batch" --target cpu --num-inputs 2
done
"$HD" bench --build-dir "$BUILD" --batch 1 --batch 8 --time 32 --warmup 3 --repeats 20 --name "cpu-$mcpu"
