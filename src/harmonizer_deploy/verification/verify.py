"""Prove a compiled artifact matches onnxruntime: per-output error statistics, musical agreement, pass/fail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.compiler.targets import load_target
from harmonizer_deploy.conversion.inputs import load_inputs, make_inputs, save_inputs
from harmonizer_deploy.core.artifacts import sha256_file
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.manifest import integrity_problems, read_manifest
from harmonizer_deploy.core.remote import RemoteSpec
from harmonizer_deploy.music.encoding import OUTPUT_NAME
from harmonizer_deploy.run.runners import RUNNERS

PERCENTILES = (50, 90, 99)
TINY = 1e-12
CHECK_ERROR_STATS = ("max", "mean", "median")

# Runners: how the artifact of a target is executed. `runner = "..."` in the target TOML picks one.
@dataclass(frozen=True)
class Tolerances:
    """atol/rtol per tensor name, with a default: `--atol 1e-5` sets the default, `--atol probs=1e-5` one
    output, so a model with several outputs can hold each to its own precision."""

    atol: float
    rtol: float
    per_atol: dict[str, float] = field(default_factory=dict)
    per_rtol: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> tuple[float, float]:
        return self.per_atol.get(name, self.atol), self.per_rtol.get(name, self.rtol)

    @classmethod
    def build(cls, spec: Any, atol: float | dict[str, float] | None, rtol: float | dict[str, float] | None,
              known: list[str] | None = None) -> Tolerances:
        """From the target's defaults plus overrides: a number, or {name: value} ("*" = default)."""
        values = {}
        for what, given, default in (("atol", atol, spec.atol), ("rtol", rtol, spec.rtol)):
            per = dict(given) if isinstance(given, dict) else {}
            base = float(per.pop("*", default)) if isinstance(given, dict) else (
                default if given is None else float(given))
            unknown = sorted(set(per) - set(known)) if known is not None else []
            if unknown:
                raise HarmonizerError(f"--{what} names {', '.join(unknown)}, not a tensor of this model",
                                      f"use one of: {', '.join(known[:8])}")
            bad = [v for v in [base, *per.values()] if not np.isfinite(v) or v < 0]
            if bad:
                raise HarmonizerError(f"--{what} must be a finite number ≥ 0, got {bad[0]}", "pass e.g. 1e-5")
            values[what] = (base, per)
        return cls(values["atol"][0], values["rtol"][0], values["atol"][1], values["rtol"][1])


def parse_tolerance(values: list[str] | None, what: str) -> float | dict[str, float] | None:
    """CLI form → library form: ["1e-5"] → 1e-5; ["probs=1e-5", "2e-4"] → {"probs": 1e-5, "*": 2e-4}."""
    if not values:
        return None
    per: dict[str, float] = {}
    for value in values:
        name, sep, number = value.rpartition("=")
        key = name if sep else "*"
        try:
            per[key] = float(number)
        except ValueError:
            raise HarmonizerError(f"--{what} {value!r} is not a number or NAME=number",
                                  f"pass e.g. --{what} 1e-5 or --{what} probs=1e-5") from None
    return per["*"] if list(per) == ["*"] else per


def error_stats(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float,
                check: str = "max") -> dict[str, Any]:
    """Error statistics of one output, including the tolerances that would have been needed to pass.

    `check` is the statistic held to the tolerance: "max" (default) requires every element within
    atol + rtol·|expected|; "mean"/"median" compare that statistic of the abs error with
    atol + rtol·(same statistic of |expected|), for outputs where a few outliers are acceptable."""
    if check not in CHECK_ERROR_STATS:
        raise HarmonizerError(f"unknown --check-error-stat {check!r}", f"use one of {', '.join(CHECK_ERROR_STATS)}")
    actual = actual.astype(np.float64)
    expected = expected.astype(np.float64)
    finite = np.isfinite(actual)
    abs_err = np.abs(actual - expected)
    abs_err = np.where(finite, abs_err, np.inf)
    rel_err = abs_err / np.maximum(np.abs(expected), TINY)
    flat_abs = abs_err.ravel()
    passed_elements = abs_err <= atol + rtol * np.abs(expected)
    stats = {
        "shape": list(actual.shape),
        "max_abs_err": float(flat_abs.max()),
        "max_rel_err": float(rel_err.max()),
        "mean_abs_err": float(flat_abs.mean()),
        "median_abs_err": float(np.median(flat_abs)),
        **{f"p{p}_abs_err": float(np.percentile(flat_abs, p)) for p in PERCENTILES},
        "nan_count": int(np.isnan(actual).sum()),
        "inf_count": int(np.isinf(actual).sum()),
        # the tolerance that would have been needed: the smallest atol alone (rtol=0), rtol alone (atol=0)
        "required_atol": float(flat_abs.max()),
        "required_rtol": float(rel_err.max()),
        "mismatched_elements": int((~passed_elements).sum()),
        "total_elements": int(abs_err.size),
        "atol": atol,
        "rtol": rtol,
        "check_error_stat": check,
    }
    magnitude = np.abs(expected).ravel()
    if check == "max":
        within = stats["mismatched_elements"] == 0
    elif check == "mean":
        within = stats["mean_abs_err"] <= atol + rtol * float(magnitude.mean())
    else:
        within = stats["median_abs_err"] <= atol + rtol * float(np.median(magnitude))
    stats["passed"] = bool(within and stats["nan_count"] == 0 and stats["inf_count"] == 0)
    return stats


def validate_stats(actual: np.ndarray) -> dict[str, Any]:
    """`--validate`: NaN/Inf and value range of an output alone, no reference needed."""
    finite = actual[np.isfinite(actual)]
    stats = {"shape": list(actual.shape), "nan_count": int(np.isnan(actual).sum()),
             "inf_count": int(np.isinf(actual).sum()), "total_elements": int(actual.size),
             "min": float(finite.min()) if finite.size else None, "max": float(finite.max()) if finite.size else None}
    stats["passed"] = stats["nan_count"] == 0 and stats["inf_count"] == 0
    return stats


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


def musical_agreement(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """For per-voice pitch distributions [B,T,P,V]: argmax agreement and mean KL(expected || actual)."""
    agreement = float(np.mean(np.argmax(actual, axis=2) == np.argmax(expected, axis=2)))
    p = np.clip(expected.astype(np.float64), 1e-12, 1.0)
    q = np.clip(actual.astype(np.float64), 1e-12, 1.0)
    kl = max(0.0, float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=2))))  # ≥ 0 up to rounding
    return {"argmax_agreement": agreement, "kl_divergence": kl}


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


def verify(
    artifact_dir: str | Path | None = None,
    target: str = "cpu",
    num_inputs: int | None = None,
    seed: int = 0,
    batch: int | None = None,
    time_steps: int | None = None,
    save_inputs_to: str | Path | None = None,
    load_inputs_from: str | Path | None = None,
    atol: float | dict[str, float] | None = None,
    rtol: float | dict[str, float] | None = None,
    progress: Callable[[int, int], None] | None = None,
    check_error_stat: str = "max",
    fail_fast: bool = False,
    validate: bool = False,
    histogram: str | Path | None = None,
    value_range: tuple[float, float] | None = None,
    remote: RemoteSpec | None = None,
) -> VerifyReport:
    """Run the artifact and onnxruntime on the same inputs; pass when every output is within tolerance.

    `atol`/`rtol`: a number or {output name: value}. `fail_fast` stops at the first input out of tolerance.
    `validate` skips onnxruntime and only checks the artifact's outputs for NaN/Inf. `histogram` writes a PNG of
    the abs error. `value_range` replaces the realistic pianorolls with seeded uniform values in [low, high].
    `remote` runs the artifact on a device a TVM RPC tracker assigns (the reference still runs here)."""
    spec = load_target(target)
    artifact_dir = Path(artifact_dir) if artifact_dir else Path("build") / spec.name
    manifest = read_manifest(artifact_dir)
    if manifest.get("target") != spec.name:
        raise HarmonizerError(
            f"{artifact_dir} holds a {manifest.get('target')!r} artifact, not {spec.name!r}",
            f"pass --target {manifest.get('target')} or the right directory",
        )
    # say "no GPU here" before spending time on the reference (a remote run checks the remote device instead)
    if manifest.get("runner", "local") == "local" and remote is None:
        from harmonizer_deploy.run.tvm import tvm_device

        tvm_device(manifest["device"], artifact_dir)
    # input sizes: arguments, else the artifact's static shape, else the target's `[verify]` table (slow software
    # devices use smaller inputs)
    static = manifest.get("static_shape")
    num_inputs = num_inputs if num_inputs is not None else int(spec.verify.get("num_inputs", 4))
    batch = batch or (static[0] if static else int(spec.verify.get("batch", 2)))
    time_steps = time_steps or (static[1] if static else int(spec.verify.get("time_steps", 32)))
    name = manifest["outputs"][0]["name"] if manifest.get("outputs") else OUTPUT_NAME
    tolerances = Tolerances.build(spec, atol, rtol, [name])
    if check_error_stat not in CHECK_ERROR_STATS:
        raise HarmonizerError(f"unknown --check-error-stat {check_error_stat!r}",
                              f"use one of {', '.join(CHECK_ERROR_STATS)}")
    if load_inputs_from:
        inputs = load_inputs(load_inputs_from)
        used_seed: int | None = None
    else:
        if num_inputs < 1 or batch < 1 or time_steps < 1:
            raise HarmonizerError("--num-inputs, --batch and --time must be positive", "pass positive values")
        inputs = make_inputs(seed, num_inputs, batch, time_steps, value_range)
        used_seed = seed
    if save_inputs_to:
        save_inputs(save_inputs_to, inputs)

    runner = RUNNERS.lookup(manifest.get("runner", "local"))
    remote_runner = None
    if remote is not None:
        from harmonizer_deploy.run.rpc import RemoteRunner

        remote_runner = RemoteRunner(artifact_dir, remote)
        runner = lambda _dir, _manifest, batch: remote_runner(batch)  # noqa: E731
    integrity = integrity_problems(artifact_dir, manifest)
    notes = [f"artifact file {p}: the artifact on disk is not what compile produced" for p in integrity]
    common = {"target": spec.name, "backend": manifest["backend"], "artifact_dir": str(artifact_dir),
              "seed": used_seed, "integrity": integrity, "notes": notes,
              "input_ranges": [[float(x.min()), float(x.max())] for x in inputs]}
    if validate:
        actual = runner(artifact_dir, manifest, inputs)
        if progress:
            progress(1, 1)
        output = {"name": name, **validate_stats(np.concatenate([a.ravel() for a in actual]))}
        return VerifyReport(passed=output["passed"] and not integrity, outputs=[output], num_inputs=len(inputs),
                            input_shapes=[list(x.shape) for x in inputs], mode="validate", reference="none",
                            remote=_remote_info(remote, remote_runner), **common)

    session = _reference_session(manifest)
    input_name = manifest["inputs"][0]["name"]
    # one input at a time with --fail-fast (stop at the first miss), else all in one runner call
    groups = [[x] for x in inputs] if fail_fast else [inputs]
    o_atol, o_rtol = tolerances.get(name)
    actual: list[np.ndarray] = []
    expected: list[np.ndarray] = []
    done = 0
    for group in groups:
        for x in group:
            expected.append(session.run(None, {input_name: x})[0])
        actual.extend(runner(artifact_dir, manifest, group))
        done += len(group)
        if progress:
            progress(done, len(inputs))
        if fail_fast and not error_stats(actual[-1], expected[-1], o_atol, o_rtol, check_error_stat)["passed"]:
            if done < len(inputs):
                notes.append(f"--fail-fast: stopped after input {done - 1} of {len(inputs)}, the first out of "
                             "tolerance")
            break
    flat_actual = np.concatenate([a.ravel() for a in actual])
    flat_expected = np.concatenate([e.ravel() for e in expected])
    stats = error_stats(flat_actual, flat_expected, o_atol, o_rtol, check_error_stat)
    output = {"name": name, **stats}
    if name == OUTPUT_NAME:
        per_input = [musical_agreement(a, e) for a, e in zip(actual, expected, strict=True)]
        output["argmax_agreement"] = float(np.mean([m["argmax_agreement"] for m in per_input]))
        output["kl_divergence"] = float(np.mean([m["kl_divergence"] for m in per_input]))
    if histogram:
        abs_err = np.abs(flat_actual.astype(np.float64) - flat_expected)
        write_error_histogram(histogram, {name: abs_err}, tolerances,
                              f"{manifest['backend']} vs onnxruntime, {len(actual)} inputs")
    used = inputs[: len(actual)]
    return VerifyReport(passed=output["passed"] and not integrity, outputs=[output], num_inputs=len(used),
                        input_shapes=[list(x.shape) for x in used], histogram=str(histogram) if histogram else None,
                        remote=_remote_info(remote, remote_runner), **common)


def _remote_info(remote: RemoteSpec | None, runner: Any) -> dict | None:
    """For the report: which tracker, which key, which device ran it (and any device lost on the way)."""
    if remote is None or runner is None:
        return None
    return {"tracker": remote.tracker, "key": remote.key, "device": runner.device, "devices": runner.devices,
            "events": runner.events}


# The browser runner (webgpu/wasm targets) registers itself on import; it needs no browser until it runs.
