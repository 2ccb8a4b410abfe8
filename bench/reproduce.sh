#!/usr/bin/env bash
# Reproduce the README's CPU performance table on this machine:
# onnxruntime and TensorFlow vs TVM (dynamic shapes, hand schedules) vs TVM (static shapes: tuned records when
# targets/tuning/ has some for this CPU, hand schedules for the rest), plus end-to-end harmonize per backend.
# OpenVINO (f32) joins when the [peers] extra is installed (else it is listed as skipped). Every runtime gets the
# same intra-op thread count (THREADS, default: the physical cores). Results: bench/results/cpu-<mcpu>.{json,md,png};
# the README's table for that result is then regenerated from that JSON (README_UPDATE=0 leaves README.md alone).
# MODEL picks the bundled model (default: the small 16x64 `default`, the README's main Performance table;
# MODEL=bach-doodle is the Bach Doodle's doodle-33x128 architecture with its own weights, results
# bench/results/doodle-33x128-cpu.*, the README's second table, the block named doodle-33x128-cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
HD="${HD:-.venv/bin/harmonizer-deploy}"
BUILD="${BUILD:-build}"
PY="${PY:-.venv/bin/python}"
mcpu=$("$PY" -c 'from tvm.target import codegen; print(codegen.llvm_get_system_cpu())')
MODEL="${MODEL:-default}"
if [ "$MODEL" = default ]; then NAME="${NAME:-cpu-$mcpu}"; else NAME="${NAME:-doodle-33x128-cpu}"; fi
THREADS="${THREADS:-$("$PY" -c 'from harmonizer_deploy.core.cpus import physical_cores; print(physical_cores())')}"

"$HD" convert "$MODEL" -o "$BUILD/model.onnx"
"$HD" compile "$BUILD/model.onnx" --target cpu -o "$BUILD/cpu"
for batch in 1 8; do
  "$HD" compile "$BUILD/model.onnx" --target cpu --batch "$batch" --time 32 -o "$BUILD/cpu-b$batch"
  "$HD" verify "$BUILD/cpu-b$batch" --target cpu --num-inputs 2
done
"$HD" bench --build-dir "$BUILD" --batch 1 --batch 8 --time 32 --warmup 3 --repeats 20 --threads "$THREADS" \
  --name "$NAME"
if [ "${README_UPDATE:-1}" = 1 ]; then
  "$HD" bench --readme-table "bench/results/$NAME.json" --readme README.md
fi
