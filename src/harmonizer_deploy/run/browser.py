"""Run a web artifact in headless Chromium: the `browser` runner behind `verify --target webgpu|wasm`, and the
browser rows of bench (load/shader-compile time, first run, steady-state p50)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.core.compare import max_abs_error
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.manifest import read_manifest, verified_manifest
from harmonizer_deploy.core.onnxruntime import ort_session
from harmonizer_deploy.web.browser import chromium
from harmonizer_deploy.web.jsdeps import tvmjs_bundle
from harmonizer_deploy.web.server import Job, WebServer

DEFAULT_TIMEOUT_S = 300.0  # SwiftShader WebGPU is slow; small shapes finish in well under a minute


@dataclass
class BrowserRun:
    outputs: list[np.ndarray]
    report: dict[str, Any]


def _drive(page: str, artifacts: dict[str, Path], job: Job, timeout_s: float, what: str,
           isolate: bool = True) -> dict[str, Any]:
    """Serve `artifacts` on 127.0.0.1, open `page` in headless Chromium, wait for the job's report. `isolate`:
    send COOP/COEP (off only to check what a page that is not cross-origin isolated does)."""
    with WebServer(tvmjs_bundle(), artifacts, job, isolate=isolate) as server, \
            chromium(f"{server.url}/static/{page}") as proc:
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
        raise HarmonizerError(f"{what} failed in Chromium: {report.get('error')}{detail}",
                              "see the message; for WebGPU check chrome://gpu on this machine")
    return report


def _outputs(job: Job, report: dict[str, Any]) -> list[np.ndarray]:
    outputs = []
    for i, run in enumerate(report["runs"]):
        data = job.outputs.get(i)
        if data is None:
            raise HarmonizerError(f"the browser did not return output {i}", "rerun; report it if it persists")
        outputs.append(np.frombuffer(data, dtype="<f4").reshape(run["shape"]).copy())
    return outputs


def _job(artifact_url: str, inputs: list[np.ndarray], warmup: int, repeats: int, **options: Any) -> Job:
    arrays = [np.ascontiguousarray(x, dtype="<f4") for x in inputs]
    return Job(artifact_url=artifact_url, inputs=[a.tobytes() for a in arrays], shapes=[list(a.shape) for a in arrays],
               warmup=warmup, repeats=repeats, options=options)


def run_job(artifact_dir: str | Path, inputs: list[np.ndarray], warmup: int = 0, repeats: int = 0,
            timeout_s: float = DEFAULT_TIMEOUT_S, threads: int | None = None, isolate: bool = True) -> BrowserRun:
    """Run a web artifact on `inputs` in headless Chromium (TVM's JS runtime); outputs + timings. `threads`: for
    a threaded (`wasm-mt`) artifact, the threads to start (default: its manifest's); the report's `threads` is
    how many ran and `threadsReason` why fewer."""
    artifact_dir = Path(artifact_dir)
    manifest = verified_manifest(artifact_dir)  # the browser loads exactly what compile wrote, or nothing
    if "web_params" not in manifest:
        raise HarmonizerError(f"{artifact_dir} is not a web artifact (target {manifest.get('target')})",
                              "compile with --target webgpu or --target wasm")
    if threads is not None and threads < 1:
        raise HarmonizerError(f"threads must be >= 1, got {threads}", "pass a positive thread count")
    job = _job("/artifacts/model/", inputs, warmup, repeats, **({"threads": int(threads)} if threads else {}))
    report = _drive("runner.html", {"model": artifact_dir}, job, timeout_s, f"the {manifest.get('target')} artifact",
                    isolate=isolate)
    return BrowserRun(_outputs(job, report), report)


# dtypes the page moves as raw bytes (TVM's web runtime copies any of these; bool has no 1-byte JS view there)
FEED_DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int32", "int64")


def run_feeds_in_browser(artifact_dir: str | Path, manifest: dict[str, Any], feeds: list[dict[str, np.ndarray]],
                         timeout_s: float = DEFAULT_TIMEOUT_S) -> list[list[np.ndarray]]:
    """Any signature: each input set (input name → array) through the web artifact in headless Chromium, every
    output back, in the manifest's output order. The inputs go in the manifest's order with its dtypes."""
    artifact_dir = Path(artifact_dir)
    verified = verified_manifest(artifact_dir)
    if "web_params" not in verified:
        raise HarmonizerError(f"{artifact_dir} is not a web artifact (target {verified.get('target')})",
                              "compile with --target webgpu or --target wasm")
    signature = manifest.get("inputs") or []
    odd = [f"{i['name']} ({i.get('dtype')})" for i in signature if i.get("dtype", "float32") not in FEED_DTYPES]
    if odd:
        raise HarmonizerError(f"the browser runner cannot pass input(s) {', '.join(odd)} to TVM's web runtime",
                              f"verify this model on the cpu target; the browser takes {', '.join(FEED_DTYPES)}")
    tensors: list[np.ndarray] = []
    sets = []
    for feed in feeds:
        entries = []
        for sig in signature:
            dtype = np.dtype(sig.get("dtype", "float32")).newbyteorder("<")
            entries.append({"input": len(tensors), "dtype": sig.get("dtype", "float32")})
            tensors.append(np.ascontiguousarray(feed[sig["name"]], dtype=dtype))
        sets.append(entries)
    job = Job(artifact_url="/artifacts/model/", inputs=[t.tobytes() for t in tensors],
              shapes=[list(t.shape) for t in tensors], options={"sets": sets})
    report = _drive("runner.html", {"model": artifact_dir}, job, timeout_s, f"the {verified.get('target')} artifact")
    results, k = [], 0
    for i, run in enumerate(report["runs"]):
        outs = []
        for spec in run["outputs"]:
            data = job.outputs.get(k)
            if data is None:
                raise HarmonizerError(f"the browser did not return output {k} (input set {i})",
                                      "rerun; report it if it persists")
            dtype = np.dtype(spec["dtype"]).newbyteorder("<")
            outs.append(np.frombuffer(data, dtype=dtype).reshape(spec["shape"]).astype(dtype.newbyteorder("=")))
            k += 1
        results.append(outs)
    return results


ORT_WEB_EPS = ("wasm", "webgpu")


def run_ort_web(onnx_path: str | Path, inputs: list[np.ndarray], ep: str = "wasm", threads: int = 1,
                warmup: int = 0, repeats: int = 0, timeout_s: float = DEFAULT_TIMEOUT_S) -> BrowserRun:
    """The same ONNX model in onnxruntime-web (pinned npm package) in the same headless Chromium: the peer of
    the tvm-wasm / tvm-webgpu rows. `threads` > 1 needs the page cross-origin isolated, which the server makes
    it; the report says whether it was."""
    from harmonizer_deploy.web.jsdeps import ort_web_dist

    onnx_path = Path(onnx_path)
    if ep not in ORT_WEB_EPS:
        raise HarmonizerError(f"unknown onnxruntime-web execution provider {ep!r}", f"use one of {ORT_WEB_EPS}")
    if not onnx_path.is_file():
        raise HarmonizerError(f"ONNX model not found: {onnx_path}", "run `harmonizer-deploy convert` first")
    job = _job(f"/artifacts/onnx/{onnx_path.name}", inputs, warmup, repeats, ep=ep, threads=int(threads))
    report = _drive("ort_runner.html", {"onnx": onnx_path.parent, "ort-web": ort_web_dist()}, job, timeout_s,
                    f"onnxruntime-web ({ep})")
    return BrowserRun(_outputs(job, report), report)


def _latency_row(backend: str, result: BrowserRun, batch: int, time_steps: int, warmup: int,
                 repeats: int) -> dict[str, Any]:
    run, t = result.report["runs"][0], result.report["timings"]
    samples = run["samples_ms"]
    return {"backend": backend, "batch": batch, "time_steps": time_steps,
            "load_ms": t["load_ms"], "shader_compile_ms": t.get("shader_compile_ms", 0.0),
            "first_run_ms": run["first_ms"], "p50_ms": statistics.median(samples), "min_ms": min(samples),
            "p90_ms": float(np.percentile(samples, 90)), "mean_ms": statistics.fmean(samples),
            "repeats": repeats, "warmup": warmup, "device": result.report.get("device"),
            "adapter": result.report.get("adapter"), "user_agent": result.report.get("userAgent"),
            "samples_ms": samples}


def _error_vs_onnxruntime(onnx_path: str | Path, x: np.ndarray, actual: np.ndarray) -> float:
    """Max abs error of a browser row's output against native onnxruntime on the same input."""
    session = ort_session(onnx_path)
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    return max_abs_error(actual, expected)


def ort_web_bench(onnx_path: str | Path, ep: str = "wasm", threads: int = 1, batch: int = 1, time_steps: int = 32,
                  warmup: int = 2, repeats: int = 10, seed: int = 0) -> dict[str, Any]:
    """Browser latency row of onnxruntime-web: `ort-web-wasm-1t`, `ort-web-wasm-2t`, `ort-web-webgpu`."""
    from harmonizer_deploy.music.encoding import realistic_inputs

    x = realistic_inputs(seed, batch, time_steps)
    result = run_ort_web(onnx_path, [x], ep, threads, warmup, repeats)
    name = f"ort-web-wasm-{threads}t" if ep == "wasm" else "ort-web-webgpu"
    row = _latency_row(name, result, batch, time_steps, warmup, repeats)
    row.update(cross_origin_isolated=result.report.get("crossOriginIsolated"), threads=result.report.get("threads"),
               precision="f32",
               version=result.report.get("version"),
               max_abs_err_vs_onnxruntime=_error_vs_onnxruntime(onnx_path, x, result.outputs[0]))
    return row


def run_in_browser(artifact_dir: str | Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The outputs of the artifact on each input, computed in headless Chromium."""
    return run_job(artifact_dir, inputs).outputs


def browser_bench(artifact_dir: str | Path, batch: int = 1, time_steps: int = 32, warmup: int = 2,
                  repeats: int = 10, seed: int = 0, reference: str | Path | None = None,
                  threads: int | None = None) -> dict[str, Any]:
    """Browser latency row: load (fetch + instantiate + shader compile), first run, steady-state p50/min/p90;
    with `reference` (the model.onnx), the max abs error against native onnxruntime on the timed input."""
    from harmonizer_deploy.music.encoding import realistic_inputs

    x = realistic_inputs(seed, batch, time_steps)
    manifest = read_manifest(artifact_dir)
    threaded = bool(manifest.get("threads"))
    result = run_job(artifact_dir, [x], warmup=warmup, repeats=repeats, threads=threads if threaded else None)
    row = _latency_row(manifest["backend"], result, batch, time_steps, warmup, repeats)
    weights = (manifest.get("web_params") or {}).get("encoding", "float32")
    # wasm: the threads that ran (1 unless a `wasm-mt` artifact's workers joined); the math is float32 whatever
    # the shipped weights are
    row.update(threads=int(result.report.get("threads") or 1) if manifest.get("device") == "cpu" else None,
               precision="f32" if weights == "float32" else f"f32 ({weights} weights)",
               cross_origin_isolated=result.report.get("crossOriginIsolated"))
    if threaded and result.report.get("threadsReason"):
        row["threads_reason"] = result.report["threadsReason"]
    if reference is not None and Path(reference).is_file():
        row["max_abs_err_vs_onnxruntime"] = _error_vs_onnxruntime(reference, x, result.outputs[0])
    return row


def run_page(build_dir: str | Path = "build", melody: int = 0, steps: int | None = None, backend: str | None = None,
             seed: int = 0, screenshot: str | Path | None = None,
             timeout_s: float = DEFAULT_TIMEOUT_S, midi: str | Path | None = None,
             artifacts: dict[str, Path] | None = None) -> dict[str, Any]:
    """Open the harmonizer page in headless Chromium, let it harmonize bundled melody `melody` (or the MIDI file
    `midi`, read by the page itself), and return what the page reports (backend, melody, the four voices,
    seconds); optionally save a screenshot of the page. `artifacts`: {web target: artifact dir} instead of the
    web artifacts found in `build_dir`."""
    from urllib.parse import urlencode

    from harmonizer_deploy.web.browser import chromium_with_devtools
    from harmonizer_deploy.web.server import page_artifacts

    extra = {"/melody.mid": Path(midi)} if midi is not None else {}
    query = {"auto": 1, "melody": melody, "seed": seed, **({"steps": steps} if steps else {}),
             **({"backend": backend} if backend else {}), **({"midi": "/melody.mid"} if extra else {})}
    served = artifacts if artifacts is not None else page_artifacts(build_dir)
    with WebServer(tvmjs_bundle(), served, extra_files=extra) as server, \
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
