"""Peak memory and time of `debug localize` on the default model, per chunk size.

Each measurement runs in a fresh process. Memory: psutil samples the process RSS every 10 ms while the measured
call runs (`peak_rss_mb`, and `delta_mb` over the RSS just before it); getrusage's high-water mark is also
recorded, but importing TVM + onnxruntime alone sets it, so it hides what localize adds. A fault is planted
at the Softmax (the second-to-last node, tests/plant.py) so the scan has to walk the whole graph before it
finds it: the worst case. `chunk 0` = every node in one sub-model, i.e. "mark all outputs" at once. The
baseline process loads the same libraries and runs the whole artifact once, so `localize - baseline` is what
localizing costs.

    PYTHONPATH=src python bench/debug_memory.py [--chunks 4,8,16,0] [--shapes 2x32,4x64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "debug-bench"
PLANT_OP = "Softmax"
PLANT_FACTOR = 1.01


def _install_plant() -> str:
    import onnx

    sys.path.insert(0, str(REPO / "tests"))
    import plant
    from harmonizer_deploy.compiler.build import build as compiler

    model = onnx.load(str(BUILD / "model.onnx"))
    name = next(n.name for n in model.graph.node if n.op_type == PLANT_OP)
    compiler.import_onnx = plant.planted_importer(compiler.import_onnx, name, PLANT_FACTOR)
    return name


def prepare() -> None:
    import harmonizer_deploy as hd

    if not (BUILD / "model.onnx").is_file():
        hd.convert(None, BUILD / "model.onnx")
    _install_plant()
    hd.compile(BUILD / "model.onnx", "cpu", BUILD / "planted", force=True)


def sample_rss(fn: Callable[[], Any], every: float = 0.01) -> tuple[Any, float, float]:
    """Run fn() while a thread samples this process's RSS: (result, RSS before in MB, peak RSS in MB)."""
    import psutil

    process = psutil.Process()
    before = process.memory_info().rss
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(every):
            peak[0] = max(peak[0], process.memory_info().rss)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], process.memory_info().rss)
    return result, before / 2**20, peak[0] / 2**20


def child(mode: str, chunk: int, batch: int, time_steps: int) -> dict:
    import onnxruntime as ort
    import tvm  # noqa: F401 - loaded before the measurement in both modes

    from harmonizer_deploy.verification.verify import debug as debugging
    from harmonizer_deploy.conversion.inputs import make_inputs
    from harmonizer_deploy.run.tvm import CompiledModel

    planted = _install_plant()
    row: dict = {"mode": mode, "chunk_size": chunk, "batch": batch, "time": time_steps}

    def baseline() -> None:
        x = make_inputs(0, 1, batch, time_steps)[0]
        CompiledModel(BUILD / "planted").run(x)
        ort.InferenceSession(str(BUILD / "model.onnx"), providers=["CPUExecutionProvider"]).run(None,
                                                                                               {"pianoroll_mask": x})

    def run_localize() -> Any:
        return debugging.localize(BUILD / "planted", "cpu", chunk_size=chunk or 10_000, batch=batch,
                                  time_steps=time_steps)

    start = time.perf_counter()
    report, before, peak = sample_rss(baseline if mode == "baseline" else run_localize)
    row["seconds"] = round(time.perf_counter() - start, 2)
    row.update(rss_before_mb=round(before, 1), peak_rss_mb=round(peak, 1), delta_mb=round(peak - before, 1))
    if mode != "baseline":
        assert report.culprit and report.culprit["name"] == planted, report.verdict
        row.update(num_nodes=report.num_nodes, submodels_compiled=report.submodels_compiled,
                   compile_seconds=round(report.compile_seconds, 2), peak_live_tensors=report.peak_live_tensors,
                   peak_live_mb=round(report.peak_live_bytes / 1e6, 1), found=report.culprit["name"])
    row["ru_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", default="4,8,0")
    parser.add_argument("--shapes", default="2x32,4x64")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "debug_memory"))
    parser.add_argument("--child", nargs=4, metavar=("MODE", "CHUNK", "BATCH", "TIME"))
    args = parser.parse_args()
    if args.child:
        mode, chunk, batch, time_steps = args.child
        print(json.dumps(child(mode, int(chunk), int(batch), int(time_steps))))
        return
    prepare()
    rows = []
    for shape in args.shapes.split(","):
        batch, time_steps = shape.split("x")
        for mode, chunk in [("baseline", "0")] + [("localize", c) for c in args.chunks.split(",")]:
            proc = subprocess.run([sys.executable, __file__, "--child", mode, chunk, batch, time_steps],
                                  capture_output=True, text=True, env=os.environ, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    import platform

    result = {"model": "bundled default (16 layers x 64 filters)", "plant": f"{PLANT_OP} x {PLANT_FACTOR}",
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| input [b,t] | mode | chunk | sub-models | tensors held | held MB | RSS before MB | peak RSS MB | "
             "added MB | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        chunk = "–" if r["mode"] == "baseline" else (r["chunk_size"] or "all")
        lines.append(f"| {r['batch']}x{r['time']} | {r['mode']} | {chunk} | {r.get('submodels_compiled', '–')} | "
                     f"{r.get('peak_live_tensors', '–')} | {r.get('peak_live_mb', '–')} | {r['rss_before_mb']} | "
                     f"{r['peak_rss_mb']} | {r['delta_mb']} | {r['seconds']} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
