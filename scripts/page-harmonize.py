"""The harmonizer page harmonizes a MIDI melody in headless Chromium on a web artifact (wasm, wasm-mt, webgpu).

Why: a web artifact runs in a browser, not in this process, so `make target=wasm|wasm-mt|webgpu` harmonizes its
sample through the page, as a user would. Usage: page-harmonize.py BUILD_DIR MIDI BACKEND SCREENSHOT.png
"""

from __future__ import annotations

import sys

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.run.browser import run_page


def main(build_dir: str, midi: str, backend: str, screenshot: str) -> int:
    try:
        report = run_page(build_dir, midi=midi, backend=backend, screenshot=screenshot)
    except HarmonizerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{report['status']} {report['steps']} Gibbs steps in {report['seconds']:.1f} s; screenshot {screenshot}")
    return 0 if report["ok"] else 3


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print("usage: page-harmonize.py BUILD_DIR MIDI BACKEND SCREENSHOT.png", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
