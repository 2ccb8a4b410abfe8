"""Run a web artifact in headless Chromium: the `browser` runner behind `verify --target webgpu|wasm`, and the
browser rows of bench (load/shader-compile time, first run, steady-state p50)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.manifest import read_manifest, verified_manifest
from harmonizer_deploy.web.browser import chromium
from harmonizer_deploy.web.jsdeps import tvmjs_bundle
from harmonizer_deploy.web.server import Job, WebServer

DEFAULT_TIMEOUT_S = 300.0  # SwiftShader WebGPU is slow; small shapes finish in well under a minute


@dataclass
class BrowserRun:
    outputs: list[np.ndarray]
    report: dict[str, Any]


def run_job(artifact_dir: str | Path, inputs: list[np.ndarray], warmup: int = 0, repeats: int = 0,
            timeout_s: float = DEFAULT_TIMEOUT_S) -> BrowserRun:
    """Serve the artifact on 127.0.0.1, open the runner page in headless Chromium, collect outputs + timings."""
    artifact_dir = Path(artifact_dir)
    manifest = verified_manifest(artifact_dir)  # the browser loads exactly what compile wrote, or nothing
    if "web_params" not in manifest:
        raise HarmonizerError(f"{artifact_dir} is not a web artifact (target {manifest.get('target')})",
                              "compile with --target webgpu or --target wasm")
    arrays = [np.ascontiguousarray(x, dtype="<f4") for x in inputs]
    job = Job(artifact_url="/artifacts/model/", inputs=[a.tobytes() for a in arrays],
              shapes=[list(a.shape) for a in arrays], warmup=warmup, repeats=repeats)
    with WebServer(tvmjs_bundle(), {"model": artifact_dir}, job) as server, \
            chromium(f"{server.url}/static/runner.html") as proc:
        deadline = time.monotonic() + timeout_s
        while not job.done.wait(0.5):
            if proc.poll() is not None:
                raise HarmonizerError(f"chromium exited (code {proc.returncode}) before the run finished",
                                      "run `chromium --headless=new --no-sandbox --enable-unsafe-webgpu` by hand "
                                      "to see why")
            if time.monotonic() > deadline:
                tail = " | ".join(job.log[-6:]) or "the page logged nothing"
                raise HarmonizerError(f"the browser run did not finish within {timeout_s:.0f} s (page: {tail})",
                                      "use smaller inputs (--batch 1 --time 32) or a faster machine")
    report = job.report or {}
    if not report.get("ok"):
        # the runtime's own messages (e.g. a WebGPU validation error) come before its generic exit(1)
        detail = next((ln for ln in reversed(job.log) if "error" in ln.lower() and ln != report.get("error")), "")
        detail = f" (page log: {detail.splitlines()[0][:300]})" if detail else ""
        raise HarmonizerError(f"the {manifest.get('target')} artifact failed in Chromium: {report.get('error')}"
                              f"{detail}", "see the message; for WebGPU check chrome://gpu on this machine")
    outputs = []
    for i, run in enumerate(report["runs"]):
        data = job.outputs.get(i)
        if data is None:
            raise HarmonizerError(f"the browser did not return output {i}", "rerun; report it if it persists")
        outputs.append(np.frombuffer(data, dtype="<f4").reshape(run["shape"]).copy())
    return BrowserRun(outputs, report)


def run_in_browser(artifact_dir: str | Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The outputs of the artifact on each input, computed in headless Chromium."""
    return run_job(artifact_dir, inputs).outputs


def browser_bench(artifact_dir: str | Path, batch: int = 1, time_steps: int = 32, warmup: int = 2,
                  repeats: int = 10, seed: int = 0) -> dict[str, Any]:
    """Browser latency row: load (fetch + instantiate + shader compile), first run, steady-state p50/min/p90."""
    from harmonizer_deploy.music.encoding import realistic_inputs

    x = realistic_inputs(seed, batch, time_steps)
    result = run_job(artifact_dir, [x], warmup=warmup, repeats=repeats)
    run, t = result.report["runs"][0], result.report["timings"]
    samples = run["samples_ms"]
    manifest = read_manifest(artifact_dir)
    return {"backend": manifest["backend"], "batch": batch, "time_steps": time_steps,
            "load_ms": t["load_ms"], "shader_compile_ms": t.get("shader_compile_ms", 0.0),
            "first_run_ms": run["first_ms"], "p50_ms": statistics.median(samples), "min_ms": min(samples),
            "p90_ms": float(np.percentile(samples, 90)), "mean_ms": statistics.fmean(samples),
            "repeats": repeats, "warmup": warmup, "device": result.report.get("device"),
            "adapter": result.report.get("adapter"), "user_agent": result.report.get("userAgent")}


def run_page(build_dir: str | Path = "build", melody: int = 0, steps: int | None = None, backend: str | None = None,
             seed: int = 1, screenshot: str | Path | None = None,
             timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Open the harmonizer page in headless Chromium, let it harmonize bundled melody `melody`, and return what
    the page reports (backend, melody, the four voices, seconds); optionally save a screenshot of the page."""
    from urllib.parse import urlencode

    from harmonizer_deploy.web.browser import chromium_with_devtools
    from harmonizer_deploy.web.server import page_artifacts

    query = {"auto": 1, "melody": melody, "seed": seed, **({"steps": steps} if steps else {}),
             **({"backend": backend} if backend else {})}
    with WebServer(tvmjs_bundle(), page_artifacts(build_dir)) as server, \
            chromium_with_devtools(f"{server.url}/?{urlencode(query)}") as (proc, devtools):
        deadline = time.monotonic() + timeout_s
        while not server.posted_event.wait(0.5):
            if proc.poll() is not None:
                raise HarmonizerError(f"chromium exited (code {proc.returncode}) before the page finished",
                                      "run `chromium --headless=new --no-sandbox` by hand to see why")
            if time.monotonic() > deadline:
                raise HarmonizerError(f"the page did not harmonize within {timeout_s:.0f} s",
                                      "use fewer steps (?steps=N) or the wasm backend")
        report = dict(server.posted.get("page") or {})
        if screenshot:
            time.sleep(0.3)  # let the last canvas draw reach the screen
            devtools.screenshot(server.url, Path(screenshot))
            report["screenshot"] = str(screenshot)
    if not report.get("ok"):
        raise HarmonizerError(f"the page failed to harmonize: {report.get('error')}",
                              "open the page with `harmonizer-deploy serve` to see the message")
    return report
