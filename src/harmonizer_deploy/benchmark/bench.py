"""Latency of every available backend on the same inputs: JSON, a markdown table and a PNG "who wins" chart.

Backends are timed interleaved (one call of each per round) so a busy machine slows them all alike. Each row
records what ran (threads and precision read back from its runtime, package versions, artifact hashes) and how
far its output is from onnxruntime's on the timed inputs, so a fast wrong row cannot pass as a win and two
results can be compared (`compare`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from harmonizer_deploy.benchmark.flops import measured_peak_gflops, model_flops
from harmonizer_deploy.core.artifacts import atomic_file, sha256_file, write_json
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.remote import RemoteSpec
from harmonizer_deploy.music.encoding import realistic_inputs
from harmonizer_deploy.music.harmonize import SAMPLES_DIR
from harmonizer_deploy.run.backends import (
    DEFAULT_BUILD_DIR,
    OnnxRuntimeBackend,
    PeerUnavailable,
    built_tvm_targets,
    open_harmonizer,
)

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
    """tensorflow (when the [convert] extra is installed), onnxruntime, openvino (f32; skipped with the extra to
    install when absent) (+ onnxruntime's CUDA provider when installed and a GPU is here) and every built local TVM
    artifact whose device is on this machine (a cuda artifact on a CPU-only box is left out, not an error; name it
    with --backend to get the 'no device' error)."""
    from harmonizer_deploy.core.extras import installed
    from harmonizer_deploy.run.backends import onnxruntime_cuda_available
    from harmonizer_deploy.run.tvm import device_present

    names = ["tensorflow", "onnxruntime", "openvino"] if installed("tensorflow") else ["onnxruntime", "openvino"]
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


ORT_WEB_ROW = re.compile(r"ort-web-(?:wasm-(?P<threads>[1-9][0-9]?)t|webgpu)")
BROWSER_ROUNDS = 3  # each round runs every browser backend once, in a fresh Chromium: the rounds interleave them


def ort_web_peers(in_browser: dict[str, Path], threads: int | None) -> list[str]:
    """The onnxruntime-web rows a default bench adds next to TVM's browser rows: wasm with 1 thread and with all
    cores (the page is cross-origin isolated), and its webgpu EP when a tvm-webgpu row is there to compare."""
    from harmonizer_deploy.core.cpus import physical_cores

    if not in_browser:
        return []
    peers = ["ort-web-wasm-1t", f"ort-web-wasm-{threads or physical_cores()}t"]
    if any(json.loads((p / "manifest.json").read_text()).get("device") == "webgpu" for p in in_browser.values()):
        peers.append("ort-web-webgpu")
    return list(dict.fromkeys(peers))


def browser_rows(artifacts: dict[str, Path | None], onnx_path: Path, time_steps: int, warmup: int, repeats: int,
                 seed: int, threads: int | None = None) -> tuple[list[dict], list[dict]]:
    """Browser rows (headless Chromium, batch 1 as in the page): TVM's web artifacts and onnxruntime-web on the same
    model.onnx and input; load incl. shader setup, first run, p50/min/p90, error against native onnxruntime.

    Interleaved by rounds rather than per call (each run is a fresh Chromium): a machine that slows down mid-run
    slows every row alike. A peer that cannot run here (npm package, WebGPU adapter) is skipped with the reason.
    `threads`: the threads a threaded (`wasm-mt`) artifact starts (default: its manifest's); each row records the
    count that ran.
    """
    from harmonizer_deploy.run.browser import browser_bench, ort_web_bench

    per_round = max(1, min(repeats, BROWSER_MAX_REPEATS))
    first: dict[str, dict] = {}
    samples: dict[str, list[float]] = {name: [] for name in artifacts}
    skipped: dict[str, dict] = {}
    for _ in range(BROWSER_ROUNDS):
        for name, path in artifacts.items():
            if name in skipped:
                continue
            try:
                if (peer := ORT_WEB_ROW.fullmatch(name)) is not None:
                    ep, n = ("wasm", int(peer["threads"])) if peer["threads"] else ("webgpu", 1)
                    row = ort_web_bench(onnx_path, ep, n, 1, time_steps, min(warmup, 1), per_round, seed)
                else:
                    row = browser_bench(path, 1, time_steps, min(warmup, 1), per_round, seed, reference=onnx_path,
                                        threads=threads)
            except HarmonizerError as exc:
                if path is not None:
                    raise  # our own artifact failing is an error, not a skipped peer
                skipped[name] = {"backend": name, "reason": exc.problem, "fix": exc.fix}
                continue
            first.setdefault(name, row)
            samples[name] += row.pop("samples_ms")
    rows = []
    for name, row in first.items():
        rows.append({**row, **latency_stats(samples[name]), "backend": name, "repeats": len(samples[name]),
                     "where": "headless Chromium", "interleaved": f"{BROWSER_ROUNDS} rounds"})
    return rows, list(skipped.values())


HARMONIZE_SAMPLE = SAMPLES_DIR / "two-bars.mid"  # 2 bars of 4/4 = 32 sixteenth steps
HARMONIZE_STEPS = 96  # Gibbs steps, as in the Bach Doodle


def harmonize_rows(opened: dict, repeats: int, seed: int) -> list[dict]:
    """End-to-end harmonization of the two-bar sample (96 Gibbs steps, batch 1) per backend, interleaved:
    what a user waits for, network calls plus the sampler's numpy work in between.

    Each row goes through the same call as `harmonize` (`harmonize_notes` with the backend's window) and
    records the runner its network calls reached and how many there were, so a row cannot silently time a
    different runner or a different amount of work than the CLI; and the process CPU seconds next to the
    wall seconds, so a row slowed by other load on the machine can be told from a slow runtime.
    """
    from harmonizer_deploy.music.harmonize import backend_window, harmonize_notes
    from harmonizer_deploy.music.midi import read_melody
    from harmonizer_deploy.music.sampling import GibbsSettings

    notes, _ = read_melody(HARMONIZE_SAMPLE)
    usable = {}
    for name, backend in opened.items():
        try:
            window = backend_window(backend)
        except HarmonizerError:  # compiled for a batch > 1: the sampler runs batch 1, so no harmonize row
            continue
        usable[name] = GibbsSettings(steps=HARMONIZE_STEPS, window=window)
    seconds: dict[str, list[float]] = {n: [] for n in usable}
    cpu: dict[str, list[float]] = {n: [] for n in usable}
    calls: dict[str, int] = {}
    reached: dict[str, set[str]] = {n: set() for n in usable}
    for _ in range(repeats):
        for name, settings in usable.items():
            backend, count = opened[name], [0]

            def run(x: np.ndarray, backend=backend, count=count, name=name) -> np.ndarray:
                count[0] += 1
                reached[name].add(getattr(backend, "name", name))
                return backend.run(x)

            cpu0 = time.process_time()
            seconds[name].append(harmonize_notes(notes, run, seed, settings).seconds)
            cpu[name].append(time.process_time() - cpu0)
            calls[name] = count[0]
            time.sleep(SETTLE_S)
    rows = []
    for n, v in seconds.items():
        p50 = statistics.median(v)
        rows.append({"backend": n, "runner": sorted(reached[n]), "melody": HARMONIZE_SAMPLE.name, "time_steps": 32,
                     "gibbs_steps": HARMONIZE_STEPS, "window": usable[n].window, "network_calls": calls[n],
                     "p50_s": p50, "min_s": min(v), "cpu_p50_s": statistics.median(cpu[n]),
                     "per_call_ms": p50 / calls[n] * 1e3 if calls[n] else None, "repeats": len(v)})
    return rows


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

    from harmonizer_deploy.core.cpus import physical_cores

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": os.cpu_count(), "cpus_allowed": allowed, "physical_cores": physical_cores(),
            "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def git_commit() -> dict | None:
    """The commit of the harmonizer_deploy source that ran (and whether it had uncommitted changes), when the
    package lives in a git checkout; None for an installed wheel or without git."""
    where = Path(__file__).resolve().parent
    try:
        # this very file must be tracked there: a venv inside some other repository is not our checkout
        subprocess.run(["git", "-C", str(where), "ls-files", "--error-unmatch", Path(__file__).name],
                       capture_output=True, timeout=10, check=True)
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)} if head else None


def package_versions(extra: dict[str, str]) -> dict[str, str]:
    """Versions of the packages every row depends on plus those each timed runtime reported (`extra`)."""
    import numpy
    import onnx

    return {"python": platform.python_version(), "numpy": numpy.__version__, "onnx": onnx.__version__, **extra}


def _percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p))


def latency_stats(samples_ms: list[float]) -> dict:
    """min / p50 / p90 with the spread next to them (stdev, IQR), so a difference can be judged against noise."""
    return {"p50_ms": statistics.median(samples_ms), "min_ms": min(samples_ms),
            "p90_ms": _percentile(samples_ms, 90), "mean_ms": statistics.fmean(samples_ms),
            "stdev_ms": statistics.stdev(samples_ms) if len(samples_ms) > 1 else 0.0,
            "iqr_ms": _percentile(samples_ms, 75) - _percentile(samples_ms, 25)}


def _open_all(names: list[str], build_dir: Path, threads: int | None) -> tuple[dict, dict, list[dict]]:
    """Open each backend; a peer runtime that is not installed (or cannot run the model) becomes a skipped entry
    with the reason and the fix, never an error."""
    opened, load_ms, skipped = {}, {}, []
    for backend_name in names:
        t0 = time.perf_counter()
        try:
            # bench feeds chorale-like pianorolls: another model gets one clear line, not an onnxruntime error
            opened[backend_name] = open_harmonizer(backend_name, build_dir, None, "bench",
                                                   "bench times the harmonizer's input; check this model's artifact "
                                                   "with `harmonizer-deploy verify`", threads=threads)
        except PeerUnavailable as e:
            skipped.append({"backend": backend_name, "reason": e.problem, "fix": e.fix})
            continue
        load_ms[backend_name] = (time.perf_counter() - t0) * 1e3
    return opened, load_ms, skipped


def _settings(backend: object) -> dict:
    get = getattr(backend, "runtime_settings", None)
    return get() if get else {}


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
    threads: int | None = None,
    remote: RemoteSpec | None = None,
) -> dict:
    """Time each backend per batch size; write `<out_dir>/<name>.{json,md,png}` unless out_dir is None.

    `threads` gives every backend the same intra-op thread count; each row records the count its runtime
    reports. Every row carries its max abs error against onnxruntime on the inputs it was timed on. `remote`
    adds a `tvm-<dir>@rpc` row per TVM artifact, run on a device the RPC tracker assigns, interleaved with the
    local rows (an artifact whose device is not here runs remotely only).
    """
    build_dir = Path(build_dir)
    if repeats < 1 or warmup < 0 or any(b < 1 for b in batches) or time_steps < 1:
        raise HarmonizerError("bench needs repeats >= 1, warmup >= 0, batch >= 1, time >= 1", "fix the options")
    if threads is not None and threads < 1:
        raise HarmonizerError(f"--threads must be >= 1, got {threads}", "pass a positive thread count")
    load_at_start = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    requested = backends or default_backends(build_dir)
    skipped = [] if backends else skipped_backends(build_dir, requested)
    in_browser: dict[str, Path | None] = {n: p for n in requested if (p := _browser_artifact(n, build_dir)) is not None}
    peers = [n for n in requested if ORT_WEB_ROW.fullmatch(n)]
    if not backends:
        peers = ort_web_peers(in_browser, threads)
    in_browser.update(dict.fromkeys(peers))
    local = [n for n in requested if n not in in_browser]
    remote_names = remote_backends(build_dir, requested if backends else None) if remote is not None else []
    if remote_names:
        local = [n for n in local if n not in remote_names or _device_here(build_dir / n.removeprefix("tvm-"))]
        skipped = [s for s in skipped if s["backend"] not in remote_names]
    opened, load_ms, missing = _open_all(local, build_dir, threads)
    skipped += missing
    names = list(opened)
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
    onnx_path = build_dir / "model.onnx"
    reference = opened.get("onnxruntime")
    if reference is None and onnx_path.is_file():
        reference = OnnxRuntimeBackend(onnx_path)  # untimed: only the error reference
    rows = []
    total = len(batches) * len(names) * (1 + warmup + repeats)
    done = 0
    for batch in batches:
        x = realistic_inputs(seed, batch, time_steps)
        expected = np.asarray(reference.run(x)) if reference is not None else None
        # a static-shape (tuned) artifact only runs the shape it was compiled for
        runnable = [n for n in names if getattr(opened[n], "accepts", lambda b, t: True)(batch, time_steps)]
        first, error, samples, cpu_ms = {}, {}, {n: [] for n in runnable}, {n: [] for n in runnable}
        for n in runnable:
            t0 = time.perf_counter()
            y = np.asarray(opened[n].run(x))
            first[n] = (time.perf_counter() - t0) * 1e3
            error[n] = float(np.max(np.abs(y.astype(np.float64) - expected))) if expected is not None else None
            for _ in range(warmup):
                opened[n].run(x)
            done += 1 + warmup
            if progress:
                progress(done, total)
        for _ in range(repeats):
            for n in runnable:
                c0, t0 = time.process_time(), time.perf_counter()
                opened[n].run(x)
                samples[n].append((time.perf_counter() - t0) * 1e3)
                cpu_ms[n].append((time.process_time() - c0) * 1e3)
                time.sleep(SETTLE_S)
                done += 1
            if progress:
                progress(done, total)
        for n in runnable:
            settings = _settings(opened[n])
            rows.append({"backend": n, "batch": batch, "time_steps": time_steps, **latency_stats(samples[n]),
                         "cpu_p50_ms": statistics.median(cpu_ms[n]),
                         "first_run_ms": first[n], "load_ms": load_ms[n], "repeats": repeats, "warmup": warmup,
                         "max_abs_err_vs_onnxruntime": error[n],
                         **{k: v for k, v in settings.items() if k != "versions"}})
    for r in rows:  # remote rows say which device ran them
        if getattr(opened.get(r["backend"]), "where", None):
            r["where"] = opened[r["backend"]].where
    if in_browser:
        web_rows, web_skipped = browser_rows(in_browser, onnx_path, time_steps, warmup, repeats, seed, threads)
        rows += web_rows
        skipped += web_skipped
    harmonize = harmonize_rows(opened, harmonize_repeats, seed) if harmonize_repeats > 0 else []
    onnxruntime_s = {r["backend"]: r["p50_s"] for r in harmonize}.get("onnxruntime")
    for r in harmonize:
        if onnxruntime_s:
            r["ratio_to_onnxruntime"] = r["p50_s"] / onnxruntime_s
    flops = {b: model_flops(onnx_path, b, time_steps) for b in batches} if onnx_path.is_file() else {}
    for r in rows:
        if flops.get(r["batch"]):
            r["gflop"] = flops[r["batch"]] / 1e9
            r["gflops_per_s"] = flops[r["batch"]] / (r["p50_ms"] / 1e3) / 1e9
    onnxruntime_p50 = {r["batch"]: r["p50_ms"] for r in rows if r["backend"] == "onnxruntime"}
    for r in rows:
        if r["batch"] in onnxruntime_p50:
            r["ratio_to_onnxruntime"] = r["p50_ms"] / onnxruntime_p50[r["batch"]]
    timed_versions: dict[str, str] = {}
    for backend in opened.values():
        timed_versions.update(_settings(backend).get("versions", {}))
    machine = {**machine_info(), "peak_gflops_matmul_f32": round(measured_peak_gflops(), 1)}
    result = {"rows": rows, "harmonize": harmonize, "skipped": skipped, "machine": machine,
              "versions": package_versions(timed_versions), "git": git_commit(),
              "model": {"path": str(onnx_path), "sha256": sha256_file(onnx_path)} if onnx_path.is_file() else None,
              "created": datetime.now(UTC).isoformat(timespec="seconds"),
              "config": {"batches": list(batches), "time_steps": time_steps, "warmup": warmup, "repeats": repeats,
                         "seed": seed, "build_dir": str(build_dir), "interleaved": True,
                         "load_average_at_start": load_at_start,
                         "threads_requested": threads, "argv": sys.argv[1:]}}
    if out_dir is not None:
        write_results(result, Path(out_dir), name)
    return result


def compare(result: dict, baseline: dict, threshold_pct: float = 10.0) -> list[dict]:
    """Each row present in both results (same backend, batch, time steps; harmonize rows by backend): the p50
    change in percent and whether it is slower than the baseline by more than `threshold_pct`."""
    if threshold_pct < 0:
        raise HarmonizerError(f"--threshold must be >= 0, got {threshold_pct}", "pass a percentage such as 10")

    def keyed(res: dict) -> dict[tuple, float]:
        try:
            rows = {("latency", r["backend"], r["batch"], r["time_steps"]): float(r["p50_ms"]) for r in res["rows"]}
            rows |= {("harmonize", r["backend"], r.get("melody"), r.get("gibbs_steps")): float(r["p50_s"])
                     for r in res.get("harmonize", [])}
        except (KeyError, TypeError, ValueError) as e:
            raise HarmonizerError(f"not a bench result (row without {e})",
                                  "pass a JSON written by `harmonizer-deploy bench`") from e
        return rows

    current, base = keyed(result), keyed(baseline)
    changes = []
    for key, value in current.items():
        if key not in base or base[key] <= 0:
            continue
        change = (value / base[key] - 1) * 100
        changes.append({"kind": key[0], "backend": key[1], "batch": key[2] if key[0] == "latency" else 1,
                        "unit": "ms" if key[0] == "latency" else "s", "baseline": base[key], "current": value,
                        "change_pct": change, "regressed": change > threshold_pct})
    return changes


def read_result(path: str | Path) -> dict:
    """A bench JSON (hostile input: a clear error for anything else)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HarmonizerError(f"cannot read bench result {path}: {e}",
                              "pass a JSON written by `harmonizer-deploy bench`") from e
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise HarmonizerError(f"{path} is not a bench result (no rows)",
                              "pass a JSON written by `harmonizer-deploy bench`")
    return data


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def provenance_lines(result: dict) -> list[str]:
    """What ran: versions, git commit, model hash, CPU and threads (so two results can be told apart)."""
    git = result.get("git")
    versions = ", ".join(f"{k} {v}" for k, v in sorted(result.get("versions", {}).items()))
    m = result["machine"]
    lines = [f"- CPU: {m['cpu']}; {m['cores']} logical CPUs ({m.get('cpus_allowed', '?')} allowed, "
             f"{m.get('physical_cores', '?')} physical cores); load average at the end {m.get('load_average')}; "
             f"threads requested: {result['config'].get('threads_requested') or 'runtime defaults'}",
             f"- versions: {versions or '?'}",
             f"- git: {git['commit'][:12] + (' (uncommitted changes)' if git['dirty'] else '') if git else 'none'}"]
    if result.get("model"):
        lines.append(f"- model: {result['model']['path']} sha256 {result['model']['sha256'][:16]}…")
    for r in result["rows"]:
        for f, digest in (r.get("artifact_sha256") or {}).items():
            lines.append(f"- {r['backend']} {f} sha256 {digest[:16]}…")
            break
    return list(dict.fromkeys(lines))


def markdown_table(result: dict) -> str:
    lines = [
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores. "
        f"Time steps {result['config']['time_steps']}, {result['config']['repeats']} interleaved repeats "
        f"after {result['config']['warmup']} warm-up runs. "
        f"Measured peak (float32 2048² matmul, best of numpy BLAS and onnxruntime MLAS): "
        f"{result['machine'].get('peak_gflops_matmul_f32', '?')} GFLOP/s. "
        "GFLOP/s is effective: the model's direct-convolution FLOPs over the latency, so a backend that computes "
        "fewer multiplies (tvm-cpu's Winograd convolutions) can exceed the peak. Error: max abs difference from "
        "onnxruntime's output on the timed inputs.",
        "",
        *provenance_lines(result),
        *busy_warning(result),
        "",
        "| backend | batch | threads | precision | p50 ms | min ms | p90 ms | stdev ms | IQR ms | CPU ms (p50) "
        "| first run ms | load ms | GFLOP/s | × onnxruntime | max abs err |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        label = f"{r['backend']} ({r['where']}, {r['repeats']} repeats)" if r.get("where") else r["backend"]
        lines.append(f"| {label} | {r['batch']} | {r.get('threads', '–')} | {r.get('precision', '–')} "
                     f"| {r['p50_ms']:.2f} | {r['min_ms']:.2f} | {r['p90_ms']:.2f} | {_fmt(r.get('stdev_ms'), '.2f')} "
                     f"| {_fmt(r.get('iqr_ms'), '.2f')} | {_fmt(r.get('cpu_p50_ms'), '.2f')} "
                     f"| {r['first_run_ms']:.1f} | {r['load_ms']:.0f} "
                     f"| {_fmt(r.get('gflops_per_s'), '.1f')} | {_fmt(r.get('ratio_to_onnxruntime'), '.2f')} "
                     f"| {_fmt(r.get('max_abs_err_vs_onnxruntime'), '.1e')} |")
    if result.get("harmonize"):
        first = result["harmonize"][0]
        lines += ["", f"End-to-end harmonize of {first['melody']} ({first['time_steps']} steps, {first['gibbs_steps']} "
                  f"Gibbs steps, batch 1), {first['repeats']} interleaved runs:", "",
                  "| backend | network calls | p50 s | min s | CPU s (p50) | ms per call | × onnxruntime |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in result["harmonize"]:
            lines.append(f"| {r['backend']} | {r.get('network_calls', '–')} | {r['p50_s']:.3f} | {r['min_s']:.3f} "
                         f"| {_fmt(r.get('cpu_p50_s'), '.2f')} | {_fmt(r.get('per_call_ms'), '.1f')} "
                         f"| {_fmt(r.get('ratio_to_onnxruntime'), '.2f')} |")
    lines += wins_markdown(result)
    for s in result.get("skipped", []):
        lines.append(f"\nNot benchmarked: {s['backend']} ({s['reason']}" + (f"; {s['fix']})" if s.get("fix")
                                                                            else ")"))
    return "\n".join(lines) + "\n"


def busy_warning(result: dict) -> list[str]:
    """A warning when other work had the CPUs: on an oversubscribed machine every runtime waits for the scheduler
    at each parallel region, latencies inflate by different factors and ratios stop meaning much. Process CPU
    time (the `CPU` columns) is the load-robust view of the work each backend did."""
    m, config = result.get("machine", {}), result.get("config", {})
    loads = [v[0] for v in (config.get("load_average_at_start"), m.get("load_average")) if v]
    cpus = m.get("cpus_allowed") or m.get("cores") or 1
    if not loads or max(loads) <= cpus:
        return []
    return ["", f"**Warning: the machine was busy** (1-minute load average {max(loads)} on {cpus} CPUs): other "
            "processes competed for the cores, so latencies are inflated, unevenly across runtimes; compare CPU "
            "time, or rerun on an idle machine."]


def wins_markdown(result: dict) -> list[str]:
    """Per batch size: backends fastest first, each as × onnxruntime, with effective GFLOP/s next to the peak."""
    peak = result["machine"].get("peak_gflops_matmul_f32")
    lines = []
    for batch in sorted({r["batch"] for r in result["rows"]}):
        rows = sorted((r for r in result["rows"] if r["batch"] == batch), key=lambda r: r["p50_ms"])
        lines += ["", f"### Who wins, batch {batch}", "",
                  f"| rank | backend | p50 ms | × onnxruntime | GFLOP/s | % of measured peak ({peak} GFLOP/s) "
                  "| max abs err |", "|---:|---|---:|---:|---:|---:|---:|"]
        for rank, r in enumerate(rows, 1):
            share = r["gflops_per_s"] / peak * 100 if peak and r.get("gflops_per_s") else None
            lines.append(f"| {rank} | {r['backend']} ({r.get('precision', '?')}, {r.get('threads', '?')} threads) "
                         f"| {r['p50_ms']:.2f} | {_fmt(r.get('ratio_to_onnxruntime'), '.2f')} "
                         f"| {_fmt(r.get('gflops_per_s'), '.1f')} | {_fmt(share, '.0f')} "
                         f"| {_fmt(r.get('max_abs_err_vs_onnxruntime'), '.1e')} |")
    return lines


README_START = "<!-- bench-table:start (generated by `harmonizer-deploy bench --readme-table`; do not edit) -->"
README_END = "<!-- bench-table:end -->"


def readme_table(result: dict, source: str | None = None) -> str:
    """The README's Performance table, generated from a committed bench result: one column per batch size
    (p50 and × onnxruntime) plus harmonize, and each row's threads, precision and max error; under a caption
    saying where it ran and how busy the machine was (a loaded shared VM inflates every number)."""
    m = result.get("machine", {})
    caption = (f"From `{source}`" if source else "Generated") + f" ({result.get('created', '?')}): {m.get('cpu', '?')}"
    caption += f", {m.get('cores', '?')} CPUs, threads {result.get('config', {}).get('threads_requested') or 'default'}"
    if m.get("load_average"):
        caption += f", load average at the end {m['load_average'][0]}"
    if m.get("peak_gflops_matmul_f32"):
        caption += f", measured matmul peak {m['peak_gflops_matmul_f32']} GFLOP/s"
    if busy_warning(result):
        caption += " — **the machine was busy: every number is inflated, unevenly; not a fair comparison**"
    batches = sorted({r["batch"] for r in result["rows"]})
    harmonize = {r["backend"]: r for r in result.get("harmonize", [])}
    versions = result.get("versions", {})
    version_of = {"onnxruntime": "onnxruntime", "tensorflow": "tensorflow", "openvino": "openvino",
                  "openvino-bf16": "openvino", "tvm-": "tvm"}
    header = "| backend | threads | precision | " + " | ".join(f"batch {b}" for b in batches)
    header += " | harmonize 2 bars, 96 Gibbs steps | max abs err vs onnxruntime |" if harmonize else \
        " | max abs err vs onnxruntime |"
    lines = [caption + ".", "", header, "|---|---:|---|" + "---:|" * (len(batches) + (1 if harmonize else 0) + 1)]
    for backend in dict.fromkeys(r["backend"] for r in result["rows"]):
        by_batch = {r["batch"]: r for r in result["rows"] if r["backend"] == backend}
        some = next(iter(by_batch.values()))
        key = next((v for k, v in version_of.items() if backend == k or (k.endswith("-") and backend.startswith(k))),
                   None)
        label = f"{backend} {versions[key]}" if key and versions.get(key) else backend
        cells = []
        for b in batches:
            r = by_batch.get(b)
            ratio = r and r.get("ratio_to_onnxruntime")
            cells.append("–" if r is None else f"{r['p50_ms']:.2f} ms" + (f" ({ratio:.2f}×)" if ratio and
                                                                          backend != "onnxruntime" else ""))
        if harmonize:
            h, ort = harmonize.get(backend), harmonize.get("onnxruntime")
            ratio = h and ort and h["p50_s"] / ort["p50_s"]
            cells.append("–" if h is None else f"{h['p50_s']:.3f} s" + (f" ({ratio:.2f}×)" if ratio and
                                                                         backend != "onnxruntime" else ""))
        errors = [r["max_abs_err_vs_onnxruntime"] for r in by_batch.values()
                  if r.get("max_abs_err_vs_onnxruntime") is not None]
        cells.append(f"{max(errors):.1e}" if errors else "–")
        lines.append(f"| {label} | {some.get('threads', '–')} | {some.get('precision', '–')} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"


def readme_markers(block: str | None = None) -> tuple[str, str]:
    """The (start, end) marker lines of a generated table block: unnamed for the main CPU table, or named after
    a result file's stem (`bench-table:start doodle-33x128-cpu ...`) so one README can hold several tables."""
    if block is None:
        return README_START, README_END
    return (README_START.replace("bench-table:start", f"bench-table:start {block}"),
            README_END.replace("bench-table:end", f"bench-table:end {block}"))


def update_readme(readme: str | Path, table: str, block: str | None = None) -> str | None:
    """Replace the generated block between the bench-table markers in `readme` (nothing else is touched): the
    block named `block` when the README has one, else the unnamed block. Returns the name of the block replaced."""
    readme = Path(readme)
    try:
        text = readme.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise HarmonizerError(f"cannot read {readme}: {e}", "pass the README.md to update") from e
    if block is not None and readme_markers(block)[0] not in text:
        block = None
    start_marker, end_marker = readme_markers(block)
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise HarmonizerError(f"{readme} has no generated bench table block",
                              f"add the two marker lines {start_marker!r} and {end_marker!r} where the table goes")
    new = text[: start + len(start_marker)] + "\n" + table + text[end:]
    with atomic_file(readme) as tmp:
        tmp.write_text(new)
    return block


def write_results(result: dict, out_dir: Path, name: str) -> dict[str, Path]:
    """`<name>.json`, `<name>.md` and `<name>.png`: per batch size, each backend's effective GFLOP/s as bars
    with the measured peak as a line, labelled with its latency as × onnxruntime (who wins, at a glance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("json", "md", "png")}
    write_json(paths["json"], result)
    with atomic_file(paths["md"]) as tmp:
        tmp.write_text(f"# Latency: {name}\n\n" + markdown_table(result))
    batches = sorted({r["batch"] for r in result["rows"]}) or [1]
    peak = result["machine"].get("peak_gflops_matmul_f32")
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 0.6 + 0.55 * max(
        3, len({r["backend"] for r in result["rows"]}))), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        rows = sorted((r for r in result["rows"] if r["batch"] == batch), key=lambda r: -r["p50_ms"])
        labels = [f"{r['backend']} ({r.get('precision', '?')}, {r.get('threads', '?')}t)" for r in rows]
        values = [r.get("gflops_per_s") or 0.0 for r in rows]
        bars = ax.barh(labels, values, color=["tab:green" if r is rows[-1] else "tab:gray" for r in rows])
        ax.bar_label(bars, labels=[f"{r['p50_ms']:.2f} ms" + (f", {r['ratio_to_onnxruntime']:.2f}× ort"
                                                               if "ratio_to_onnxruntime" in r else "")
                                   for r in rows], fontsize=7, padding=2)
        if peak:
            ax.axvline(peak, color="tab:red", linestyle="--", linewidth=1)
            ax.text(peak, len(rows) - 0.45, f" measured peak {peak:.0f}", color="tab:red", fontsize=7, va="bottom")
        ax.set_xlim(0, max([*values, peak or 0]) * 1.45 or 1)
        ax.set_xlabel("effective GFLOP/s (direct-convolution FLOPs / p50)")
        ax.set_title(f"batch {batch}, {result['config']['time_steps']} steps", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"Who wins — {result['machine']['cpu']}, threads "
                 f"{result['config'].get('threads_requested') or 'default'}", fontsize=9)
    fig.tight_layout()
    with atomic_file(paths["png"]) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return paths
