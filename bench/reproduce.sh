#!/usr/bin/env bash
# Reproduce the README's CPU performance table on this machine:
# onnxruntime and TensorFlow vs TVM (dynamic shapes, hand schedules) vs TVM (static shapes: tuned records when
# targets/tuning/ has some for this CPU, hand schedules for the rest), plus end-to-end harmonize per backend.
# OpenVINO (f32) joins when the [peers] extra is installed (else it is listed as skipped). Every runtime gets the
# same intra-op thread count (THREADS, default: the physical cores). Results: bench/results/cpu-<mcpu>.{json,md,png};
# the README's Performance table is then regenerated from that JSON (README_UPDATE=0 leaves README.md alone).
set -euo pipefail
cd "$(dirname "$0")/.."
HD="${HD:-.venv/bin/harmonizer-deploy}"
BUILD="${BUILD:-build}"
PY="${PY:-.venv/bin/python}"
mcpu=$("$PY" -c 'from tvm.target import codegen; print(codegen.llvm_get_system_cpu())')
THREADS="${THREADS:-$("$PY" -c 'from harmonizer_deploy.core.cpus import physical_cores; print(physical_cores())')}"

"$HD" convert -o "$BUILD/model.onnx"
"$HD" compile "$BUILD/model.onnx" --target cpu -o "$BUILD/cpu"
for batch in 1 8; do
  "$HD" compile "$BUILD/model.onnx" --target cpu --batch "$batch" --time 32 -o "$BUILD/cpu-b$batch"
  "$HD" verify "$BUILD/cpu-b$batch" --target cpu --num-inputs 2
done
"$HD" bench --build-dir "$BUILD" --batch 1 --batch 8 --time 32 --warmup 3 --repeats 20 --threads "$THREADS" \
  --name "cpu-$mcpu"
if [ "${README_UPDATE:-1}" = 1 ]; then
  "$HD" bench --readme-table "bench/results/cpu-$mcpu.json" --readme README.md
fi
