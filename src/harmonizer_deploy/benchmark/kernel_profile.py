"""Where a compiled CPU artifact spends its time: `perf` samples of a steady call loop, per Relax kernel.

Why: `bench` gives one number per call; deciding what to optimise needs the split between the kernels, TVM's
runtime (thread-pool waits, workspace allocations, the VM) and Python. perf cannot name most of the samples in
model.so: TVM emits each parallel loop body as an unnamed function placed right after its kernel's
`<kernel>_compute_` symbol, so an address is attributed here to the nearest text symbol below it. Sampling
starts only after warm-up calls (perf attaches to the running process), so imports and loading are not counted.
Needs Linux `perf` (software cpu-clock sampling is enough: no hardware counters required).
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError

PERF_FIX = "install perf (Debian: apt-get install linux-perf) and allow sampling (sysctl kernel.perf_event_paranoid=1)"
_NM_LINE = re.compile(r"^([0-9a-fA-F]+)\s+([tTwW])\s+(\S+)$")
_REPORT_LINE = re.compile(r"^\s*(\d+)\s*\|([^|]*)\|\s*\[[.k]\]\s+(.*?)\s*$")
_VM_CALL = re.compile(r"^\s*call\s+(\S+)\s+in:")


def kernel_ranges(nm_text: str) -> list[tuple[int, str]]:
    """(address, kernel) for every text symbol of `nm -n` output, sorted; `<kernel>_compute_` is named as the
    kernel, since its unnamed parallel body follows it."""
    found = []
    for line in nm_text.splitlines():
        match = _NM_LINE.match(line.strip())
        if match:
            found.append((int(match[1], 16), match[3].removesuffix("_compute_")))
    return sorted(found)


def kernel_of(address: int, ranges: list[tuple[int, str]]) -> str:
    """The kernel whose code holds `address` (the nearest symbol at or below it)."""
    index = bisect.bisect_right([start for start, _ in ranges], address) - 1
    return ranges[index][1] if index >= 0 else "?"


def parse_perf_report(text: str) -> list[tuple[int, str, str]]:
    """(samples, dso, symbol) rows of `perf report -F sample,dso,sym -t '|'`."""
    rows = []
    for line in text.splitlines():
        match = _REPORT_LINE.match(line)
        if match:
            rows.append((int(match[1]), match[2].strip(), match[3]))
    return rows


def attribute(rows: list[tuple[int, str, str]], library: str, ranges: list[tuple[int, str]]) -> tuple[Counter, Counter]:
    """Samples per kernel of `library` (addresses mapped with `ranges`) and per `dso: symbol` for the rest."""
    kernels: Counter = Counter()
    other: Counter = Counter()
    for samples, dso, symbol in rows:
        if dso == library:
            name = kernel_of(int(symbol, 16), ranges) if symbol.startswith("0x") else symbol.removesuffix("_compute_")
            kernels[name] += samples
        else:
            other[f"{dso}: {symbol}"] += samples
    return kernels, other


def calls_per_run(vm_text: str, function: str = "main") -> Counter:
    """How often `function` of a Relax VM executable (its `as_text()`) calls each kernel (VM builtins left out)."""
    calls: Counter = Counter()
    inside = False
    for line in vm_text.splitlines():
        if line.startswith("@"):
            inside = line.strip() == f"@{function}:"
            continue
        match = _VM_CALL.match(line) if inside else None
        if match and not match[1].startswith("vm."):
            calls[match[1]] += 1
    return calls


def feeds_for(inputs: list[dict], dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the manifest's shapes, symbolic dims taken from `dims` (any model, not only Coconet)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        shape = []
        for dim in spec["shape"]:
            if isinstance(dim, int):
                shape.append(dim)
            elif dim in dims:
                shape.append(dims[dim])
            else:
                raise HarmonizerError(f"input {spec['name']!r} has a symbolic dim {dim!r} with no value",
                                      f"pass --dim {dim}=N")
        dtype = np.dtype(spec.get("dtype", "float32"))
        values = rng.random(shape) if dtype.kind == "f" else rng.integers(0, 2, shape)  # ints: valid indices
        feeds[spec["name"]] = values.astype(dtype)
    return feeds


def _perf() -> str:
    perf = shutil.which("perf")
    if perf is None:
        raise HarmonizerError("`perf` is not installed", PERF_FIX)
    return perf


def profile(artifact_dir: str | Path, dims: dict[str, int], calls: int = 30, warmup: int = 3,
            frequency: int = 2000) -> dict[str, Any]:
    """Run a local (CPU) artifact `calls` times under `perf record` and attribute the samples."""
    import tvm
    from tvm import relax

    from harmonizer_deploy.run.tvm import CompiledModel

    perf = _perf()
    model = CompiledModel(artifact_dir)
    feeds = feeds_for(model.manifest["inputs"], dims)
    for _ in range(warmup):
        model.run_feeds(feeds)
    library = model.dir / model.manifest["library"]
    with tempfile.TemporaryDirectory(prefix="kernel-profile-") as tmp:
        data = Path(tmp) / "perf.data"
        recorder = subprocess.Popen([perf, "record", "-F", str(frequency), "-p", str(os.getpid()), "-o", str(data)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # perf attaches asynchronously
        if recorder.poll() is not None:
            raise HarmonizerError(f"perf record failed: {recorder.stderr.read().strip()[-300:]}", PERF_FIX)
        start = time.perf_counter()
        for _ in range(calls):
            model.run_feeds(feeds)
        seconds = time.perf_counter() - start
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
        report = subprocess.run([perf, "report", "-i", str(data), "--stdio", "--no-children", "-g", "none",
                                 "-F", "sample,dso,sym", "-t", "|"], capture_output=True, text=True, check=False)
    nm = subprocess.run(["nm", "-n", str(library)], capture_output=True, text=True, check=False)
    kernels, other = attribute(parse_perf_report(report.stdout), library.name, kernel_ranges(nm.stdout))
    per_run = calls_per_run(relax.VMExecutable(tvm.runtime.load_module(str(library))).as_text())
    total = sum(kernels.values()) + sum(other.values())
    by_library: Counter = Counter({library.name: sum(kernels.values())})
    for name, samples in other.items():
        by_library[name.split(": ", 1)[0]] += samples
    if not total:
        raise HarmonizerError(f"perf recorded no samples of {artifact_dir}", PERF_FIX)
    return {"artifact": str(artifact_dir), "dims": dims, "calls": calls, "ms_per_call": seconds / calls * 1e3,
            "threads": os.environ.get("TVM_NUM_THREADS"), "samples": total,
            "kernels": [{"name": k, "samples": n, "share": n / total, "calls_per_run": per_run.get(k, 0)}
                        for k, n in kernels.most_common()],
            "libraries": [{"name": k, "share": n / total} for k, n in by_library.most_common()] if total else [],
            "other": [{"name": k, "samples": n, "share": n / total} for k, n in other.most_common()]}


def markdown(result: dict[str, Any], top: int = 15) -> str:
    """The profile as a markdown table: kernels first, then the rest (runtime, Python, kernel-space waits)."""
    in_kernels = sum(k["share"] for k in result["kernels"])
    lines = [f"{result['artifact']} {result['dims']}, {result['calls']} calls, {result['ms_per_call']:.2f} ms/call "
             f"wall, TVM_NUM_THREADS={result['threads']}, {result['samples']} samples; "
             f"{100 * in_kernels:.1f}% in the model's kernels",
             "by library: " + ", ".join(f"{lib['name']} {100 * lib['share']:.1f}%" for lib in result["libraries"][:6]),
             "",
             "| where | % samples | calls per run | % per call |", "|---|---:|---:|---:|"]
    for k in result["kernels"][:top]:
        per = f"{100 * k['share'] / k['calls_per_run']:.2f}" if k["calls_per_run"] else ""
        lines.append(f"| {k['name']} | {100 * k['share']:.2f} | {k['calls_per_run']} | {per} |")
    for o in result["other"][:top]:
        lines.append(f"| {o['name']} | {100 * o['share']:.2f} | | |")
    return "\n".join(lines)
