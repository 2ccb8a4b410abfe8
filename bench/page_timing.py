"""Time the harmonizer page in headless Chromium: Ode to Joy (64 steps), 96 Gibbs steps, on wasm.

Usage: .venv/bin/python bench/page_timing.py [BUILD_DIR] [--runs N]
(BUILD_DIR/wasm compiled as `make target=wasm` does: `compile --target wasm --web-weights uint8`).
Writes bench/results/web-page-ode-to-joy.{json,png}: the seconds the page reports per run (and how many of them
were spent inside the network), the model the artifact was compiled from, the machine's load average before and
after (other processes on a shared machine slow the page down: the best run is the estimate), and a screenshot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from harmonizer_deploy.core.manifest import read_manifest
from harmonizer_deploy.run.browser import run_page

RESULTS = Path(__file__).resolve().parent / "results"


def model_name(artifact_dir: Path) -> str:
    """The model the artifact was compiled from: the sidecar's bundled/config name, else the ONNX file's name."""
    model = read_manifest(artifact_dir).get("model") or {}
    sidecar = Path(model.get("sidecar") or "")
    if sidecar.is_file():
        source = json.loads(sidecar.read_text()).get("source") or {}
        name = (source.get("config") or {}).get("name") or source.get("path")
        if name:
            return str(name)
    return Path(model.get("path") or "unknown").name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_dir", nargs="?", default="build")
    parser.add_argument("--runs", type=int, default=3, help="page runs (the screenshot is the last one's)")
    args = parser.parse_args()
    artifact = Path(args.build_dir) / "wasm"
    manifest = read_manifest(artifact)
    shot = RESULTS / "web-page-ode-to-joy.png"
    load_before = os.getloadavg()
    runs = [run_page(args.build_dir, melody=0, backend="wasm", screenshot=shot if i == args.runs - 1 else None,
                     timeout_s=600) for i in range(args.runs)]
    load_after = os.getloadavg()
    order = sorted(range(len(runs)), key=lambda i: runs[i]["seconds"])
    seconds = [runs[i]["seconds"] for i in order]
    model_seconds = [runs[i].get("model_seconds") for i in order]
    steps = runs[0]["steps"]
    result = {"melody": "Ode to Joy (64 sixteenth steps)", "gibbs_steps": steps, "backend": "wasm",
              "model": model_name(artifact), "weights": (manifest.get("web_params") or {}).get("encoding", "float32"),
              "target": manifest.get("target_json"),
              "seconds": seconds, "model_seconds": model_seconds, "best_s": seconds[0],
              "median_s": seconds[len(seconds) // 2], "best_ms_per_step": 1000 * seconds[0] / steps,
              "status": runs[0]["status"], "load_average_before": load_before, "load_average_after": load_after,
              "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "created": datetime.now(UTC).isoformat(), "screenshot": shot.name}
    (RESULTS / "web-page-ode-to-joy.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
