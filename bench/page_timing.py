"""Time the harmonizer page in headless Chromium: Ode to Joy (64 steps), 96 Gibbs steps, on wasm.

Usage: .venv/bin/python bench/page_timing.py BUILD_DIR   (BUILD_DIR/wasm compiled by `compile --target wasm`)
Writes bench/results/web-page-ode-to-joy.{json,png}: the seconds the page reports and its screenshot.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from harmonizer_deploy.run.browser import run_page

RESULTS = Path(__file__).resolve().parent / "results"


def main(build_dir: str) -> None:
    shot = RESULTS / "web-page-ode-to-joy.png"
    runs = [run_page(build_dir, melody=0, backend="wasm", screenshot=shot if i == 2 else None, timeout_s=600)
            for i in range(3)]
    seconds = sorted(r["seconds"] for r in runs)
    result = {"melody": "Ode to Joy (64 sixteenth steps)", "gibbs_steps": runs[0]["steps"], "backend": "wasm",
              "seconds": seconds, "median_s": seconds[1], "status": runs[0]["status"],
              "machine": platform.processor() or platform.machine(), "created": datetime.now(UTC).isoformat(),
              "screenshot": shot.name}
    (RESULTS / "web-page-ode-to-joy.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build")
