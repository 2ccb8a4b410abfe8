"""Prove a compiled artifact matches onnxruntime: per-output error statistics, musical agreement, pass/fail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.compiler.targets import load_target
from harmonizer_deploy.conversion.inputs import (
    concrete_shape,
    index_ranges,
    is_harmonizer_io,
    load_feeds,
    make_feeds,
    save_feeds,
)
from harmonizer_deploy.core.artifacts import sha256_file
from harmonizer_deploy.core.compare import (
    CHECK_ERROR_STATS,
    Tolerances,
    error_stats,
    musical_agreement,
    validate_stats,
)
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.limits import check_elements
from harmonizer_deploy.core.manifest import check_integrity, read_manifest
from harmonizer_deploy.core.remote import RemoteSpec
from harmonizer_deploy.music.encoding import INPUT_NAME, OUTPUT_NAME
from harmonizer_deploy.run.runners import FEEDS_RUNNERS, RUNNERS


def write_error_histogram(path: str | Path, errors: dict[str, np.ndarray], tolerances: Tolerances,
                          title: str) -> None:
    """PNG histogram of |actual - expected| per output on log-spaced bins, with the atol marked: shows
    whether a failure is a few outliers or a shifted distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harmonizer_deploy.core.artifacts import atomic_file

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, err in errors.items():
        finite = err[np.isfinite(err)]
        zeros = int((finite == 0).sum())
        positive = finite[finite > 0]
        low = float(np.log10(positive.min())) if positive.size else -12.0
        high = float(np.log10(positive.max())) if positive.size else -11.0
        bins = np.logspace(np.floor(low), np.ceil(high) + 1e-9, 40)
        ax.hist(positive, bins=bins, alpha=0.6, label=f"{name} ({zeros} exact, {err.size - finite.size} non-finite)")
        ax.axvline(tolerances.get(name)[0] or 1e-12, linestyle="--", color="k")
    ax.set_xscale("log")
    ax.set_xlabel("absolute error vs onnxruntime (dashed: atol)")
    ax.set_ylabel("elements")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


@dataclass
class VerifyReport:
    target: str
    backend: str
    artifact_dir: str
    passed: bool
    outputs: list[dict]
    num_inputs: int
    seed: int | None
    input_shapes: list[list[int]]
    integrity: list[str] = field(default_factory=list)
    reference: str = "onnxruntime"
    notes: list[str] = field(default_factory=list)
    input_ranges: list[list[float]] = field(default_factory=list)
    mode: str = "compare"
    histogram: str | None = None
    remote: dict | None = None  # --rpc: the tracker, key and the device(s) that ran the artifact

    def to_dict(self) -> dict:
        return {"target": self.target, "backend": self.backend, "passed": self.passed, "outputs": self.outputs,
                "reference": self.reference, "artifact_dir": self.artifact_dir, "num_inputs": self.num_inputs,
                "seed": self.seed, "input_shapes": self.input_shapes, "input_ranges": self.input_ranges,
                "mode": self.mode, "histogram": self.histogram, "integrity": self.integrity, "notes": self.notes,
                "remote": self.remote}


def _reference_session(manifest: dict):
    from harmonizer_deploy.core.onnxruntime import ort_session

    onnx_path = Path(manifest["model"]["path"])
    if not onnx_path.is_file():
        raise HarmonizerError(f"the ONNX model this artifact was compiled from is gone: {onnx_path}",
                              "re-run convert and compile")
    if sha256_file(onnx_path) != manifest["model"]["sha256"]:
        raise HarmonizerError(
            f"{onnx_path} changed after this artifact was compiled (hash mismatch)",
            "recompile: harmonizer-deploy compile --target " + manifest["target"],
        )
    return ort_session(onnx_path)  # custom-domain ops run from their model-local ONNX functions


@dataclass(frozen=True)
class VerifyOptions:
    """How `verify` picks its inputs and judges the artifact (the CLI's options, one field each).

    `atol`/`rtol`: a number or {output name: value}. `fail_fast` stops at the first input out of tolerance.
    `validate` skips onnxruntime and only checks the artifact's outputs for NaN/Inf. `histogram` writes a PNG of
    the abs error. `value_range` replaces the realistic pianorolls with seeded uniform values in [low, high]."""

    num_inputs: int | None = None
    seed: int = 0
    batch: int | None = None
    time_steps: int | None = None
    save_inputs_to: str | Path | None = None
    load_inputs_from: str | Path | None = None
    atol: float | dict[str, float] | None = None
    rtol: float | dict[str, float] | None = None
    check_error_stat: str = "max"
    fail_fast: bool = False
    validate: bool = False
    histogram: str | Path | None = None
    value_range: tuple[float, float] | dict[str, tuple[float, float]] | None = None  # {input or "*": range}


def verify(artifact_dir: str | Path | None = None, target: str = "cpu", *, options: VerifyOptions | None = None,
           progress: Callable[[int, int], None] | None = None, remote: RemoteSpec | None = None,
           **fields: Any) -> VerifyReport:
    """Run the artifact and onnxruntime on the same inputs; pass when every output is within tolerance.

    Everything after the target is keyword-only: an `options` object, or its fields by name
    (`verify(d, "cpu", num_inputs=2)`); `progress(done, total)` is called as inputs finish. `remote` runs the
    artifact on a device a TVM RPC tracker assigns (the reference still runs here)."""
    if fields:
        unknown = sorted(set(fields) - set(VerifyOptions.__dataclass_fields__))
        if unknown:
            raise TypeError(f"verify() got unexpected keyword argument(s) {', '.join(unknown)}")
        options = replace(options or VerifyOptions(), **fields)
    return _verify(artifact_dir, target, options or VerifyOptions(), progress, remote)


def _verify(artifact_dir: str | Path | None, target: str, options: VerifyOptions,
            progress: Callable[[int, int], None] | None, remote: RemoteSpec | None = None) -> VerifyReport:
    num_inputs, seed, batch, time_steps = options.num_inputs, options.seed, options.batch, options.time_steps
    save_inputs_to, load_inputs_from = options.save_inputs_to, options.load_inputs_from
    atol, rtol, check_error_stat = options.atol, options.rtol, options.check_error_stat
    fail_fast, validate, histogram, value_range = (options.fail_fast, options.validate, options.histogram,
                                                   options.value_range)
    for flag, value in (("--num-inputs", num_inputs), ("--batch", batch), ("--time", time_steps)):
        if value is not None and value < 1:
            raise HarmonizerError(f"{flag} must be positive, got {value}", f"pass {flag} 1 or more")
    spec = load_target(target)
    artifact_dir = Path(artifact_dir) if artifact_dir else Path("build") / spec.name
    manifest = read_manifest(artifact_dir)
    if manifest.get("target") != spec.name:
        raise HarmonizerError(
            f"{artifact_dir} holds a {manifest.get('target')!r} artifact, not {spec.name!r}",
            f"pass --target {manifest.get('target')} or the right directory",
        )
    check_integrity(artifact_dir, manifest)  # before anything is loaded: a damaged model.so must not reach dlopen
    # say "no GPU here" before spending time on the reference (a remote run checks the remote device instead)
    if manifest.get("runner", "local") == "local" and remote is None:
        from harmonizer_deploy.run.tvm import tvm_device

        tvm_device(manifest["device"], artifact_dir)
    # input sizes: arguments, else the artifact's static shape, else the target's `[verify]` table (slow software
    # devices use smaller inputs); fixed dims of the signature always win
    static = manifest.get("static_shape")
    num_inputs = num_inputs if num_inputs is not None else int(spec.verify.get("num_inputs", 4))
    batch = batch or (static[0] if static else int(spec.verify.get("batch", 2)))
    time_steps = time_steps or (static[1] if static else int(spec.verify.get("time_steps", 32)))
    signature = manifest.get("inputs") or [{"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", "time",
                                                                                              46, 8]}]
    names = [o["name"] for o in manifest.get("outputs") or []] or [OUTPUT_NAME]
    harmonizer = is_harmonizer_io(signature) and len(names) == 1
    # quantized web weights are held to the target's tolerance for that encoding (what the weights cost)
    web_weights = manifest.get("web_params", {}).get("encoding")
    weights_atol, weights_rtol = spec.tolerance_for(web_weights)
    spec = replace(spec, atol=weights_atol, rtol=weights_rtol)
    tolerances = Tolerances.build(spec, atol, rtol, names)
    if not load_inputs_from:  # refuse absurd sizes before allocating anything, for any signature
        for sig in signature:
            check_elements([num_inputs, *concrete_shape(sig, batch, time_steps)],
                           f"the inputs to generate for {sig['name']} (--num-inputs × its shape at --batch/--time)",
                           "pass smaller --num-inputs/--batch/--time")
    if check_error_stat not in CHECK_ERROR_STATS:
        raise HarmonizerError(f"unknown --check-error-stat {check_error_stat!r}",
                              f"use one of {', '.join(CHECK_ERROR_STATS)}")
    ranges = value_range if isinstance(value_range, dict) else {"*": value_range} if value_range else {}
    if load_inputs_from:
        feeds = load_feeds(load_inputs_from, signature)
        used_seed: int | None = None
    else:
        if num_inputs < 1 or batch < 1 or time_steps < 1:
            raise HarmonizerError("--num-inputs, --batch and --time must be positive", "pass positive values")
        int_ranges = _index_ranges(manifest) if any(_is_int(i) for i in signature) else {}
        feeds = make_feeds(signature, seed, num_inputs, batch, time_steps, ranges, int_ranges)
        used_seed = seed
    if save_inputs_to:
        save_feeds(save_inputs_to, feeds)

    runner = RUNNERS.lookup(manifest.get("runner", "local"))
    integrity: list[str] = []  # a damaged artifact was refused above; kept in the report for its readers
    notes: list[str] = []
    arrays = [x for feed in feeds for x in feed.values()]
    remote_runner = None
    if remote is not None:
        from harmonizer_deploy.run.rpc import RemoteRunner

        remote_runner = RemoteRunner(artifact_dir, remote)
        runner = lambda _dir, _manifest, batch: remote_runner(batch)  # noqa: E731
    common = {"target": spec.name, "backend": manifest["backend"], "artifact_dir": str(artifact_dir),
              "seed": used_seed, "integrity": integrity, "notes": notes,
              "input_ranges": [[float(x.min()), float(x.max())] if x.size else [] for x in arrays]}
    compiled: list[Any] = []

    def run_artifact(group: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """Outputs per input set: the target's runner for the harmonizer, the in-process VM for any model."""
        if harmonizer:
            return [[a] for a in runner(artifact_dir, manifest, [f[signature[0]["name"]] for f in group])]
        if manifest.get("runner", "local") != "local":  # the browser: every input by name, every output back
            return FEEDS_RUNNERS.lookup(manifest["runner"])(artifact_dir, manifest, group)
        if not compiled:
            from harmonizer_deploy.run.tvm import CompiledModel

            compiled.append(CompiledModel(artifact_dir))
        return [compiled[0].run_feeds(f) for f in group]

    if validate:
        actual_sets = run_artifact(feeds)
        if progress:
            progress(1, 1)
        outputs = [{"name": n, **validate_stats(np.concatenate([a[k].ravel() for a in actual_sets]))}
                   for k, n in enumerate(names)]
        return VerifyReport(passed=all(o["passed"] for o in outputs) and not integrity, outputs=outputs,
                            num_inputs=len(feeds), input_shapes=[list(x.shape) for x in arrays], mode="validate",
                            reference="none",
                            remote=_remote_info(remote, remote_runner), **common)

    session = _reference_session(manifest)
    # one input set at a time with --fail-fast (stop at the first miss), else all in one runner call
    groups = [[f] for f in feeds] if fail_fast else [feeds]
    actual: list[list[np.ndarray]] = []
    expected: list[list[np.ndarray]] = []
    done = 0
    for group in groups:
        for feed in group:
            expected.append(list(session.run(None, feed)))
        actual.extend(run_artifact(group))
        done += len(group)
        if progress:
            progress(done, len(feeds))
        if fail_fast and not all(error_stats(actual[-1][k], expected[-1][k], *tolerances.get(n), check_error_stat)
                                 ["passed"] for k, n in enumerate(names)):
            if done < len(feeds):
                notes.append(f"--fail-fast: stopped after input {done - 1} of {len(feeds)}, the first out of "
                             "tolerance")
            break
    outputs = []
    errors = {}
    for k, name in enumerate(names):
        flat_actual = np.concatenate([a[k].ravel() for a in actual])
        flat_expected = np.concatenate([e[k].ravel() for e in expected])
        output = {"name": name, **error_stats(flat_actual, flat_expected, *tolerances.get(name), check_error_stat)}
        if name == OUTPUT_NAME and harmonizer:
            per_input = [musical_agreement(a[k], e[k]) for a, e in zip(actual, expected, strict=True)]
            output["argmax_agreement"] = float(np.mean([m["argmax_agreement"] for m in per_input]))
            output["kl_divergence"] = float(np.mean([m["kl_divergence"] for m in per_input]))
        outputs.append(output)
        errors[name] = np.abs(flat_actual.astype(np.float64) - flat_expected.astype(np.float64))
    if histogram:
        write_error_histogram(histogram, errors, tolerances,
                              f"{manifest['backend']} vs onnxruntime, {len(actual)} inputs")
    used = feeds[: len(actual)]
    return VerifyReport(passed=all(o["passed"] for o in outputs) and not integrity, outputs=outputs,
                        num_inputs=len(used), input_shapes=[list(x.shape) for f in used for x in f.values()],
                        histogram=str(histogram) if histogram else None,
                        remote=_remote_info(remote, remote_runner), **common)


def _is_int(sig: dict) -> bool:
    return np.issubdtype(np.dtype(sig.get("dtype", "float32")), np.integer)


def _index_ranges(manifest: dict) -> dict[str, tuple[int, int]]:
    """Embedding-table sizes of the ONNX model the artifact came from (see `index_ranges`)."""
    import onnx

    path = Path(manifest["model"]["path"])
    return index_ranges(onnx.load(str(path))) if path.is_file() else {}


def _remote_info(remote: RemoteSpec | None, runner: Any) -> dict | None:
    """For the report: which tracker, which key, which device ran it (and any device lost on the way)."""
    if remote is None or runner is None:
        return None
    return {"tracker": remote.tracker, "key": remote.key, "device": runner.device, "devices": runner.devices,
            "events": runner.events}


# The browser runner (webgpu/wasm targets) registers itself on import; it needs no browser until it runs.
