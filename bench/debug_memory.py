"""Peak memory and time of `debug localize` on the default model, per chunk size.

Each measurement runs in a fresh process (peak RSS via resource.getrusage is per process). A fault is planted
at the Softmax (the second-to-last node, tests/plant.py) so the scan has to walk the whole graph before it
finds it: the worst case. `chunk 0` = every node in one sub-model, i.e. "mark all outputs" at once. The
baseline process loads the same libraries and runs the whole artifact once, so `localize - baseline` is what
localizing costs.

    PYTHONPATH=src python bench/debug_memory.py [--chunks 4,8,16,0] [--shapes 2x32,8x128]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "debug-bench"
PLANT_OP = "Softmax"
PLANT_FACTOR = 1.01


def _install_plant() -> str:
    import onnx

    sys.path.insert(0, str(REPO / "tests"))
    import plant

    from harmonizer_deploy import compiler

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


def child(mode: str, chunk: int, batch: int, time_steps: int) -> dict:
    from harmonizer_deploy import debugging
    from harmonizer_deploy.inputs import make_inputs
    from harmonizer_deploy.runtime import CompiledModel

    planted = _install_plant()
    start = time.perf_counter()
    row: dict = {"mode": mode, "chunk_size": chunk, "batch": batch, "time": time_steps}
    if mode == "baseline":
        import onnxruntime as ort

        x = make_inputs(0, 1, batch, time_steps)[0]
        CompiledModel(BUILD / "planted").run(x)
        ort.InferenceSession(str(BUILD / "model.onnx"), providers=["CPUExecutionProvider"]).run(None,
                                                                                               {"pianoroll_mask": x})
    else:
        report = debugging.localize(BUILD / "planted", "cpu", chunk_size=chunk or 10_000, batch=batch,
                                    time_steps=time_steps)
        assert report.culprit and report.culprit["name"] == planted, report.verdict
        row.update(num_nodes=report.num_nodes, submodels_compiled=report.submodels_compiled,
                   compile_seconds=round(report.compile_seconds, 2), peak_live_tensors=report.peak_live_tensors,
                   peak_live_mb=round(report.peak_live_bytes / 1e6, 1), found=report.culprit["name"])
    row["seconds"] = round(time.perf_counter() - start, 2)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", default="4,8,16,0")
    parser.add_argument("--shapes", default="2x32,8x128")
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
    lines = ["| input [b,t] | mode | chunk | sub-models | tensors held | held MB | peak RSS MB | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        chunk = "–" if r["mode"] == "baseline" else (r["chunk_size"] or "all")
        lines.append(f"| {r['batch']}x{r['time']} | {r['mode']} | {chunk} | {r.get('submodels_compiled', '–')} | "
                     f"{r.get('peak_live_tensors', '–')} | {r.get('peak_live_mb', '–')} | {r['peak_rss_mb']} | "
                     f"{r['seconds']} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
