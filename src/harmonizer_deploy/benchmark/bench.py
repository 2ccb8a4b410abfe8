"""Latency of every available backend on the same inputs: JSON, a markdown table and a PNG bar chart.

Backends are timed interleaved (one call of each per round) so a busy machine slows them all alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from harmonizer_deploy.benchmark.flops import measured_peak_gflops, model_flops
from harmonizer_deploy.core.artifacts import atomic_file, write_json
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.remote import RemoteSpec
from harmonizer_deploy.music.encoding import realistic_inputs
from harmonizer_deploy.music.harmonize import SAMPLES_DIR
from harmonizer_deploy.run.backends import DEFAULT_BUILD_DIR, built_tvm_targets, open_backend

RESULTS_DIR = Path("bench/results")


@dataclass
class BenchConfig:
    batches: tuple[int, ...] = (1,)
    time_steps: int = 32
    warmup: int = 2
    repeats: int = 10
    seed: int = 0


SETTLE_S = 0.005  # untimed pause after each call: spinning worker threads (TVM's, TensorFlow's) park before the next
BROWSER_MAX_REPEATS = 3  # SwiftShader WebGPU takes tens of seconds per run of the full model: keep browser rows short


def default_backends(build_dir: Path) -> list[str]:
    """tensorflow, onnxruntime (+ its CUDA provider when installed and a GPU is here) and every built local
    TVM artifact whose device is on this machine (a cuda artifact on a CPU-only box is left out, not an error;
    name it with --backend to get the 'no device' error)."""
    from harmonizer_deploy.run.backends import onnxruntime_cuda_available
    from harmonizer_deploy.run.tvm import device_present

    names = ["tensorflow", "onnxruntime"]
    if onnxruntime_cuda_available():
        names.append("onnxruntime-cuda")
    for artifact in built_tvm_targets(build_dir):
        manifest = json.loads((build_dir / artifact / "manifest.json").read_text())
        if manifest.get("runner") == "browser" or (manifest.get("runner") == "local"
                                                      and device_present(manifest.get("device", "cpu"))):
            names.append(f"tvm-{artifact}")
    return names


def skipped_backends(build_dir: Path, chosen: list[str]) -> list[dict]:
    """Built artifacts left out of a default bench because their device is not here (said, not hidden)."""
    skipped = []
    for artifact in built_tvm_targets(build_dir):
        manifest = json.loads((build_dir / artifact / "manifest.json").read_text())
        if manifest.get("runner") == "local" and f"tvm-{artifact}" not in chosen:
            skipped.append({"backend": f"tvm-{artifact}", "reason": f"no {manifest.get('device', 'cpu')} device here"})
    return skipped


def _browser_artifact(name: str, build_dir: Path) -> Path | None:
    """The artifact dir when backend `name` (tvm-<target>) runs in the browser, else None."""
    if not name.startswith("tvm-"):
        return None
    manifest = build_dir / name.removeprefix("tvm-") / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("runner") == "browser":
        return manifest.parent
    return None


def browser_rows(artifacts: dict[str, Path], time_steps: int, warmup: int, repeats: int, seed: int) -> list[dict]:
    """Browser rows (headless Chromium, batch 1 as in the page): load incl. shader setup, first run, p50/min/p90.

    Not interleaved with the other backends (a separate browser per artifact); repeats are capped.
    """
    from harmonizer_deploy.run.browser import browser_bench

    rows = []
    for name, path in artifacts.items():
        row = browser_bench(path, batch=1, time_steps=time_steps, warmup=min(warmup, 1),
                            repeats=min(repeats, BROWSER_MAX_REPEATS), seed=seed)
        rows.append({**row, "backend": name, "where": "headless Chromium", "interleaved": False})
    return rows


HARMONIZE_SAMPLE = SAMPLES_DIR / "two-bars.mid"  # 2 bars of 4/4 = 32 sixteenth steps
HARMONIZE_STEPS = 96  # Gibbs steps, as in the Bach Doodle


def harmonize_rows(opened: dict, repeats: int, seed: int) -> list[dict]:
    """End-to-end harmonization of the two-bar sample (96 Gibbs steps, batch 1) per backend, interleaved:
    what a user waits for, network calls plus the sampler's numpy work in between."""
    from harmonizer_deploy.music.harmonize import backend_window, harmonize_notes
    from harmonizer_deploy.music.midi import read_melody
    from harmonizer_deploy.music.sampling import GibbsSettings

    notes, _ = read_melody(HARMONIZE_SAMPLE)
    usable = {}
    for name, backend in opened.items():
        try:
            window = backend_window(backend) if getattr(backend, "accepts", None) else None
        except HarmonizerError:  # compiled for a batch > 1: the sampler runs batch 1, so no harmonize row
            continue
        if window is None or window >= 32:
            usable[name] = GibbsSettings(steps=HARMONIZE_STEPS, window=window)
    seconds: dict[str, list[float]] = {n: [] for n in usable}
    for _ in range(repeats):
        for name, settings in usable.items():
            seconds[name].append(harmonize_notes(notes, opened[name].run, seed, settings).seconds)
            time.sleep(SETTLE_S)
    return [{"backend": n, "melody": HARMONIZE_SAMPLE.name, "time_steps": 32, "gibbs_steps": HARMONIZE_STEPS,
             "p50_s": statistics.median(v), "min_s": min(v), "repeats": len(v)} for n, v in seconds.items()]


def remote_backends(build_dir: Path, requested: list[str] | None) -> list[str]:
    """The tvm-<dir> backends `bench --rpc` also runs remotely: those requested, else every built artifact that
    TVM's runtime runs (not browser artifacts)."""
    candidates = requested if requested is not None else [f"tvm-{a}" for a in built_tvm_targets(build_dir)]
    chosen = []
    for name in candidates:
        manifest = build_dir / name.removeprefix("tvm-") / "manifest.json"
        if name.startswith("tvm-") and manifest.is_file() and \
                json.loads(manifest.read_text()).get("runner", "local") == "local":
            chosen.append(name)
    return chosen


def _device_here(artifact_dir: Path) -> bool:
    from harmonizer_deploy.run.tvm import device_present

    return device_present(json.loads((artifact_dir / "manifest.json").read_text()).get("device", "cpu"))


def machine_info() -> dict:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def _percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p))


def bench(
    backends: list[str] | None = None,
    batches: tuple[int, ...] = (1,),
    time_steps: int = 32,
    warmup: int = 2,
    repeats: int = 10,
    seed: int = 0,
    build_dir: str | Path = DEFAULT_BUILD_DIR,
    out_dir: str | Path | None = RESULTS_DIR,
    name: str = "bench",
    progress: Callable[[int, int], None] | None = None,
    harmonize_repeats: int = 3,
    remote: RemoteSpec | None = None,
) -> dict:
    """Time each backend per batch size; write `<out_dir>/<name>.{json,md,png}` unless out_dir is None.

    `remote` adds a `tvm-<dir>@rpc` row per TVM artifact, run on a device the RPC tracker assigns, interleaved
    with the local rows (an artifact whose device is not here runs remotely only)."""
    build_dir = Path(build_dir)
    if repeats < 1 or warmup < 0 or any(b < 1 for b in batches) or time_steps < 1:
        raise HarmonizerError("bench needs repeats >= 1, warmup >= 0, batch >= 1, time >= 1", "fix the options")
    requested = backends or default_backends(build_dir)
    skipped = [] if backends else skipped_backends(build_dir, requested)
    in_browser = {n: p for n in requested if (p := _browser_artifact(n, build_dir)) is not None}
    names = [n for n in requested if n not in in_browser]
    remote_names = remote_backends(build_dir, requested if backends else None) if remote is not None else []
    if remote_names:
        names = [n for n in names if n not in remote_names or _device_here(build_dir / n.removeprefix("tvm-"))]
        skipped = [s for s in skipped if s["backend"] not in remote_names]
    opened, load_ms = {}, {}
    for backend_name in names:
        t0 = time.perf_counter()
        opened[backend_name] = open_backend(backend_name, build_dir)
        load_ms[backend_name] = (time.perf_counter() - t0) * 1e3
    if remote is not None:
        from harmonizer_deploy.run.rpc import RemoteBackend

        if not remote_names:
            raise HarmonizerError(f"bench --rpc found no TVM artifact to run remotely in {build_dir}",
                                  "compile one (cpu, cuda, vulkan) or name it with --backend tvm-<dir>")
        for backend_name in remote_names:
            t0 = time.perf_counter()
            backend = RemoteBackend(build_dir / backend_name.removeprefix("tvm-"), remote)
            opened[backend.name] = backend
            load_ms[backend.name] = (time.perf_counter() - t0) * 1e3
            names.append(backend.name)
    rows = []
    total = len(batches) * len(names) * (1 + warmup + repeats)
    done = 0
    for batch in batches:
        x = realistic_inputs(seed, batch, time_steps)
        # a static-shape (tuned) artifact only runs the shape it was compiled for
        runnable = [n for n in names if getattr(opened[n], "accepts", lambda b, t: True)(batch, time_steps)]
        first, samples = {}, {n: [] for n in runnable}
        for n in runnable:
            t0 = time.perf_counter()
            opened[n].run(x)
            first[n] = (time.perf_counter() - t0) * 1e3
            for _ in range(warmup):
                opened[n].run(x)
            done += 1 + warmup
            if progress:
                progress(done, total)
        for _ in range(repeats):
            for n in runnable:
                t0 = time.perf_counter()
                opened[n].run(x)
                samples[n].append((time.perf_counter() - t0) * 1e3)
                time.sleep(SETTLE_S)
                done += 1
            if progress:
                progress(done, total)
        for n in runnable:
            s = samples[n]
            rows.append({"backend": n, "batch": batch, "time_steps": time_steps,
                         "p50_ms": statistics.median(s), "min_ms": min(s), "p90_ms": _percentile(s, 90),
                         "mean_ms": statistics.fmean(s), "first_run_ms": first[n], "load_ms": load_ms[n],
                         "repeats": repeats, "warmup": warmup})
    for r in rows:  # remote rows say which device ran them
        if getattr(opened.get(r["backend"]), "where", None):
            r["where"] = opened[r["backend"]].where
    if in_browser:
        rows += browser_rows(in_browser, time_steps, warmup, repeats, seed)
    harmonize = harmonize_rows(opened, harmonize_repeats, seed) if harmonize_repeats > 0 else []
    onnxruntime_s = {r["backend"]: r["p50_s"] for r in harmonize}.get("onnxruntime")
    for r in harmonize:
        if onnxruntime_s:
            r["ratio_to_onnxruntime"] = r["p50_s"] / onnxruntime_s
    onnx_path = build_dir / "model.onnx"
    flops = {b: model_flops(onnx_path, b, time_steps) for b in batches} if onnx_path.is_file() else {}
    for r in rows:
        if flops.get(r["batch"]):
            r["gflop"] = flops[r["batch"]] / 1e9
            r["gflops_per_s"] = flops[r["batch"]] / (r["p50_ms"] / 1e3) / 1e9
    onnxruntime_p50 = {r["batch"]: r["p50_ms"] for r in rows if r["backend"] == "onnxruntime"}
    for r in rows:
        if r["batch"] in onnxruntime_p50:
            r["ratio_to_onnxruntime"] = r["p50_ms"] / onnxruntime_p50[r["batch"]]
    machine = {**machine_info(), "peak_gflops_matmul_f32": round(measured_peak_gflops(), 1)}
    result = {"rows": rows, "harmonize": harmonize, "skipped": skipped, "machine": machine,
              "created": datetime.now(UTC).isoformat(timespec="seconds"),
              "config": {"batches": list(batches), "time_steps": time_steps, "warmup": warmup, "repeats": repeats,
                         "seed": seed, "build_dir": str(build_dir), "interleaved": True}}
    if out_dir is not None:
        write_results(result, Path(out_dir), name)
    return result


def markdown_table(result: dict) -> str:
    lines = [
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores. "
        f"Time steps {result['config']['time_steps']}, {result['config']['repeats']} interleaved repeats "
        f"after {result['config']['warmup']} warm-up runs. "
        f"Measured peak (float32 2048² matmul, best of numpy BLAS and onnxruntime MLAS): "
        f"{result['machine'].get('peak_gflops_matmul_f32', '?')} GFLOP/s. "
        "GFLOP/s is effective: the model's direct-convolution FLOPs over the latency, so a backend that computes "
        "fewer multiplies (tvm-cpu's Winograd convolutions) can exceed the peak.",
        "",
        "| backend | batch | p50 ms | min ms | p90 ms | first run ms | load ms | GFLOP/s | × onnxruntime |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        ratio = f"{r['ratio_to_onnxruntime']:.2f}" if "ratio_to_onnxruntime" in r else "–"
        gflops = f"{r['gflops_per_s']:.1f}" if "gflops_per_s" in r else "–"
        label = f"{r['backend']} ({r['where']}, {r['repeats']} repeats)" if r.get("where") else r["backend"]
        lines.append(f"| {label} | {r['batch']} | {r['p50_ms']:.2f} | {r['min_ms']:.2f} | {r['p90_ms']:.2f} "
                     f"| {r['first_run_ms']:.1f} | {r['load_ms']:.0f} | {gflops} | {ratio} |")
    if result.get("harmonize"):
        first = result["harmonize"][0]
        lines += ["", f"End-to-end harmonize of {first['melody']} ({first['time_steps']} steps, {first['gibbs_steps']} "
                  f"Gibbs steps, batch 1), {first['repeats']} interleaved runs:", "",
                  "| backend | p50 s | min s | × onnxruntime |", "|---|---:|---:|---:|"]
        for r in result["harmonize"]:
            ratio = f"{r['ratio_to_onnxruntime']:.2f}" if "ratio_to_onnxruntime" in r else "–"
            lines.append(f"| {r['backend']} | {r['p50_s']:.3f} | {r['min_s']:.3f} | {ratio} |")
    return "\n".join(lines) + "\n"


def write_results(result: dict, out_dir: Path, name: str) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("json", "md", "png")}
    write_json(paths["json"], result)
    with atomic_file(paths["md"]) as tmp:
        tmp.write_text(f"# Latency: {name}\n\n" + markdown_table(result))
    batches = sorted({r["batch"] for r in result["rows"]})
    backends = list(dict.fromkeys(r["backend"] for r in result["rows"]))
    fig, ax = plt.subplots(figsize=(1.5 + 1.6 * len(backends) * len(batches) / 2, 4))
    width = 0.8 / max(1, len(backends))
    for i, backend in enumerate(backends):
        vals = [next((r["p50_ms"] for r in result["rows"] if r["backend"] == backend and r["batch"] == b), 0)
                for b in batches]
        xs = [j + i * width for j in range(len(batches))]
        bars = ax.bar(xs, vals, width, label=backend)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(batches))])
    ax.set_xticklabels([f"batch {b}" for b in batches])
    ax.set_ylabel("p50 latency (ms, log scale)")
    ax.set_yscale("log")
    ax.set_title(f"harmonizer latency, {result['config']['time_steps']} steps — {result['machine']['cpu']}",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(paths["png"]) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return paths
