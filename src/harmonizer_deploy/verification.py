"""Prove a compiled artifact matches onnxruntime: per-output error statistics, musical agreement, pass/fail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import sha256_file
from .encoding import OUTPUT_NAME
from .errors import HarmonizerError
from .inputs import load_inputs, make_inputs, save_inputs
from .registry import Registry
from .runtime import integrity_problems, read_manifest
from .targets import load_target

PERCENTILES = (50, 90, 99)
TINY = 1e-12

# Runners: how the artifact of a target is executed. `runner = "..."` in the target TOML picks one.
Runner = Callable[[Path, dict, list[np.ndarray]], list[np.ndarray]]
RUNNERS: Registry[Runner] = Registry("runner")
register_runner = RUNNERS.register


@register_runner("local")
def run_local(artifact_dir: Path, manifest: dict, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from .runtime import CompiledModel

    model = CompiledModel(artifact_dir)
    return [model.run(x) for x in inputs]


def error_stats(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> dict[str, Any]:
    """Error statistics of one output, including the tolerances that would have been needed to pass."""
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
    }
    stats["passed"] = bool(stats["mismatched_elements"] == 0 and stats["nan_count"] == 0
                           and stats["inf_count"] == 0)
    return stats


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

    def to_dict(self) -> dict:
        return {"target": self.target, "backend": self.backend, "passed": self.passed, "outputs": self.outputs,
                "reference": self.reference, "artifact_dir": self.artifact_dir, "num_inputs": self.num_inputs,
                "seed": self.seed, "input_shapes": self.input_shapes, "integrity": self.integrity,
                "notes": self.notes}


def _reference_session(manifest: dict):
    import onnxruntime as ort

    onnx_path = Path(manifest["model"]["path"])
    if not onnx_path.is_file():
        raise HarmonizerError(f"the ONNX model this artifact was compiled from is gone: {onnx_path}",
                              "re-run convert and compile")
    if sha256_file(onnx_path) != manifest["model"]["sha256"]:
        raise HarmonizerError(
            f"{onnx_path} changed after this artifact was compiled (hash mismatch)",
            "recompile: harmonizer-deploy compile --target " + manifest["target"],
        )
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def verify(
    artifact_dir: str | Path | None = None,
    target: str = "cpu",
    num_inputs: int | None = None,
    seed: int = 0,
    batch: int | None = None,
    time_steps: int | None = None,
    save_inputs_to: str | Path | None = None,
    load_inputs_from: str | Path | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Run the artifact and onnxruntime on the same inputs; pass when every output is within tolerance."""
    spec = load_target(target)
    artifact_dir = Path(artifact_dir) if artifact_dir else Path("build") / spec.name
    manifest = read_manifest(artifact_dir)
    if manifest.get("target") != spec.name:
        raise HarmonizerError(
            f"{artifact_dir} holds a {manifest.get('target')!r} artifact, not {spec.name!r}",
            f"pass --target {manifest.get('target')} or the right directory",
        )
    atol = spec.atol if atol is None else atol
    # input sizes: arguments, else the target's `[verify]` table (slow software devices use smaller inputs)
    num_inputs = num_inputs if num_inputs is not None else int(spec.verify.get("num_inputs", 4))
    batch = batch if batch is not None else int(spec.verify.get("batch", 2))
    time_steps = time_steps if time_steps is not None else int(spec.verify.get("time_steps", 32))
    rtol = spec.rtol if rtol is None else rtol
    if load_inputs_from:
        inputs = load_inputs(load_inputs_from)
        used_seed: int | None = None
    else:
        if num_inputs < 1 or batch < 1 or time_steps < 1:
            raise HarmonizerError("--num-inputs, --batch and --time must be positive", "pass positive values")
        inputs = make_inputs(seed, num_inputs, batch, time_steps)
        used_seed = seed
    if save_inputs_to:
        save_inputs(save_inputs_to, inputs)

    session = _reference_session(manifest)
    input_name = manifest["inputs"][0]["name"]
    expected = []
    for i, x in enumerate(inputs):
        expected.append(session.run(None, {input_name: x})[0])
        if progress:
            progress(i + 1, 2 * len(inputs))
    runner = RUNNERS.lookup(manifest.get("runner", "local"))
    actual = runner(artifact_dir, manifest, inputs)
    if progress:
        progress(2 * len(inputs), 2 * len(inputs))

    stats = error_stats(np.concatenate([a.ravel() for a in actual]),
                        np.concatenate([e.ravel() for e in expected]), atol, rtol)
    name = manifest["outputs"][0]["name"] if manifest.get("outputs") else OUTPUT_NAME
    output = {"name": name, **stats}
    if name == OUTPUT_NAME:
        per_input = [musical_agreement(a, e) for a, e in zip(actual, expected, strict=True)]
        output["argmax_agreement"] = float(np.mean([m["argmax_agreement"] for m in per_input]))
        output["kl_divergence"] = float(np.mean([m["kl_divergence"] for m in per_input]))
    integrity = integrity_problems(artifact_dir, manifest)
    notes = [f"artifact file {p}: the artifact on disk is not what compile produced" for p in integrity]
    return VerifyReport(
        target=spec.name, backend=manifest["backend"], artifact_dir=str(artifact_dir),
        passed=output["passed"] and not integrity, outputs=[output], num_inputs=len(inputs), seed=used_seed,
        input_shapes=[list(x.shape) for x in inputs], integrity=integrity, notes=notes,
    )


# The browser runner (webgpu/wasm targets) registers itself on import; it needs no browser until it runs.
from .web import runner as _browser_runner  # noqa: E402, F401
