"""ONNX → TVM Relax → a compiled artifact directory: library, params and a manifest.

Re-running with nothing changed reuses the artifact: the cache key covers the model hash, TVM version,
resolved target JSON, pipeline and exporter.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.compiler import relax_import
from harmonizer_deploy.compiler.executable import build_executable
from harmonizer_deploy.compiler.exporters import get_exporter, write_web_params
from harmonizer_deploy.compiler.pipelines import get_pipeline
from harmonizer_deploy.compiler.scheduling import ScheduleReport
from harmonizer_deploy.compiler.targets import TargetSpec, load_target
from harmonizer_deploy.compiler.versions import tvm_versions
from harmonizer_deploy.conversion.convert import check_onnx_file, sidecar_path_for
from harmonizer_deploy.core.artifacts import atomic_dir, check_output_dir, sha256_file, sha256_text
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.limits import check_elements
from harmonizer_deploy.core.params import PARAM_TRANSFORM, PARAMS_FILE, save_params
from harmonizer_deploy.core.version import __version__
from harmonizer_deploy.frontend.coverage_check import enforce as enforce_coverage

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass
class CompileResult:
    out_dir: Path
    manifest: dict
    cached: bool
    seconds: float

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "cached": self.cached, "seconds": round(self.seconds, 3),
                "target": self.manifest["target"], "library": self.manifest["library"],
                "artifacts": self.manifest["artifacts"], "cache_key": self.manifest["cache_key"],
                "static_shape": self.manifest.get("static_shape"), "tuning": self.manifest.get("tuning"),
                "bundle": {k: v for k, v in self.manifest["bundle"].items() if k != "files"}
                if self.manifest.get("bundle") else None}


def code_fingerprint() -> str:
    """Hash of this package's Python and C sources: a changed pipeline, schedule or linked-in C (the wasm-mt
    thread pool, the web runtime's headers) must not reuse old artifacts (the version string alone does not change
    between commits)."""
    package = Path(__file__).parents[1]
    sources = [p for pattern in ("*.py", "*.c", "*.h") for p in package.rglob(pattern)]
    return sha256_text("".join(sha256_file(p) for p in sorted(sources)))


def cache_key(model_sha: str, spec: TargetSpec, fix_dims: dict[str, int] | None, tuning: dict | None) -> str:
    extra = {"fix_dims": fix_dims} if fix_dims else {}  # absent when unused: existing cache keys stay valid
    return sha256_text(json.dumps({
        **extra, "model": model_sha, "tvm": tvm_versions(), "target": spec.resolved_target(),
        "host": spec.resolved_host(),
        "pipeline": spec.pipeline, "export": spec.export, "options": spec.options, "harmonizer_deploy": __version__,
        "code": code_fingerprint(),
        "tuning": tuning and tuning["sha256"], "bundle": _bundle_format(spec),
    }, sort_keys=True))


def _bundle_format(spec: TargetSpec) -> int | None:
    if not spec.options.get("bundle"):
        return None
    from harmonizer_deploy.compiler.bundle import BUNDLE_FORMAT

    return BUNDLE_FORMAT


def _cached_manifest(out_dir: Path, key: str) -> dict | None:
    """The existing manifest when its key matches and every artifact file is intact."""
    path = out_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("cache_key") != key:
        return None
    files = {**manifest.get("artifacts", {})}
    if manifest.get("bundle"):
        files.update({f"{manifest['bundle']['dir']}/{k}": v for k, v in manifest["bundle"]["files"].items()})
    for name, info in files.items():
        f = out_dir / name
        if not f.is_file() or sha256_file(f) != info["sha256"]:
            return None
    return manifest


def static_dims(batch: int | None, time_steps: int | None, fix_dims: dict[str, int] | None) -> dict[str, int]:
    """`--batch/--time` and `--fix-dim NAME=SIZE` as one {dim name: size} (empty: fully dynamic)."""
    if (batch is None) != (time_steps is None) or (batch is not None and min(batch, time_steps) < 1):
        raise HarmonizerError("--batch and --time go together and must be positive", "pass both, or neither")
    dims = dict(fix_dims or {})
    if batch is not None:
        dims.update(batch=batch, time=time_steps)
    return dims


def check_fixed_dims(onnx_model: Any, fix_dims: dict[str, int]) -> None:
    """Every fixed dim must name a symbolic dim of the model's inputs (a typo is not silently ignored), and the
    inputs it makes static must stay within MAX_ELEMENTS — checked before any compile work."""
    if not fix_dims:
        return
    weights = {t.name for t in onnx_model.graph.initializer}
    inputs = [v for v in onnx_model.graph.input if v.name not in weights]
    named = sorted({d.dim_param for v in inputs for d in v.type.tensor_type.shape.dim if d.dim_param})
    unknown = [n for n in fix_dims if n not in named]
    if unknown:
        flag = "--batch/--time" if set(unknown) <= {"batch", "time"} else "--fix-dim"
        raise HarmonizerError(
            f"{flag} names {', '.join(repr(n) for n in unknown)}, not a dim of this model's inputs",
            f"valid dim names: {', '.join(named)}" if named else "this model's inputs have no named (symbolic) dims",
        )
    for v in inputs:
        dims = [fix_dims.get(d.dim_param, 0) if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            check_elements(dims, f"input {v.name!r} with the fixed dims", "pass smaller --batch/--time/--fix-dim")


def compile(
    model: str | Path = "build/model.onnx",
    target: str = "cpu",
    output: str | Path | None = None,
    force: bool = False,
    batch: int | None = None,
    time_steps: int | None = None,
    arch: str | None = None,
    fix_dims: dict[str, int] | None = None,
    tuning_records: str | Path | None = None,
    web_weights: str | None = None,
    allow_known_mismatch: bool = False,
) -> CompileResult:
    """Compile an ONNX model for `target` (a name in targets/) into `output` (default build/<target>).

    With `batch` and `time_steps` (shorthand for `fix_dims={"batch": B, "time": T}`) the artifact has static shapes
    and uses tuned records when some match this CPU (see `harmonizer-deploy tune`); without them it accepts any
    batch and length. `fix_dims` fixes named input dims so shape computations fold away before TVM import. `arch`
    picks the GPU architecture (e.g. sm_90) of a target that lists `[options] archs`; by default it is detected.
    `tuning_records` names the records folder to use (else the user's, then those shipped with the target).
    `web_weights` ("float32", "float16", "uint8") is how a web target ships its weights (smaller downloads, with
    the error the target's `[tolerance.<encoding>]` allows; verify measures it).
    A node in a class the coverage tracker found TVM + pack computes wrongly refuses the build unless
    `allow_known_mismatch` (frontend/coverage_check.py)."""
    import contextlib

    from harmonizer_deploy.compiler.tuning import find_records

    start = time.perf_counter()
    spec = load_target(target)
    if arch:
        spec = spec.with_arch(arch)
    if web_weights:
        spec = spec.with_web_weights(web_weights)
    spec.check_buildable()
    model = Path(model)
    out_dir = Path(output) if output else Path("build") / spec.name
    check_output_dir(out_dir)  # before any work: never replace a folder holding anything but our artifact
    onnx_model = check_onnx_file(model)
    coverage_check = enforce_coverage(onnx_model, allow_known_mismatch)
    model_sha = sha256_file(model)
    fix_dims = static_dims(batch, time_steps, fix_dims)
    check_fixed_dims(onnx_model, fix_dims)
    shape = (fix_dims["batch"], fix_dims["time"]) if {"batch", "time"} <= fix_dims.keys() else None
    records, why = find_records(spec, shape, tuning_records)
    tuning = records.describe() if records else None
    key = cache_key(model_sha, spec, fix_dims, tuning)
    if not force and (manifest := _cached_manifest(out_dir, key)):
        return CompileResult(out_dir, manifest, True, time.perf_counter() - start)

    mod, names, arrays, prepare_report = relax_import.import_onnx(onnx_model, fix_dims or None)
    schedules = ScheduleReport()
    tvm_target = spec.tvm_target()
    with records.database() if records else contextlib.nullcontext():
        pipeline = get_pipeline(spec.pipeline)(spec, tvm_target, schedules)
        executable = build_executable(mod, tvm_target, pipeline=pipeline, schedules=schedules, target_name=spec.name)
    sidecar = sidecar_path_for(model)
    with atomic_dir(out_dir) as tmp:
        exported = get_exporter(spec.export)(executable, spec, tmp)
        library, extra = exported if isinstance(exported, tuple) else (exported, {})
        save_params(tmp / PARAMS_FILE, names, arrays)
        if "web_params" in extra:
            extra["web_params"].update(write_web_params(tmp, arrays, spec.options.get("web_weights", "float32")))
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        manifest = {
            "format_version": MANIFEST_VERSION,
            "target": spec.name,
            "backend": spec.backend,
            "device": spec.device,
            "runner": spec.runner,
            "target_json": spec.resolved_target(),
            "host_json": spec.resolved_host(),
            "pipeline": spec.pipeline,
            "export": spec.export,
            "options": spec.options,
            "tolerance": dict(zip(("atol", "rtol"), spec.tolerance_for(spec.options.get("web_weights")), strict=True)),
            "cache_key": key,
            "versions": {**tvm_versions(), "harmonizer_deploy": __version__},
            "model": {"path": str(model.resolve()), "sha256": model_sha,
                      "sidecar": str(sidecar.resolve()) if sidecar.is_file() else None},
            "inputs": _io(onnx_model.graph.input, exclude={i.name for i in onnx_model.graph.initializer},
                          fix_dims=fix_dims),
            "static_shape": list(shape) if shape else None,
            "tuning": tuning or {"used": False, "reason": why},
            "tvm_import": prepare_report.to_dict(),
            "coverage_check": coverage_check,
            "outputs": _io(onnx_model.graph.output),
            "library": library,
            # weights re-laid-out once at load (NHWC/HWIO, Winograd): every runtime must call it before main
            "param_transform": PARAM_TRANSFORM if PARAM_TRANSFORM in executable.as_text() else None,
            "params": names,
            "artifacts": {f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size} for f in files},
            "compile_seconds": round(time.perf_counter() - start, 3),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **extra,
        }
        if spec.pipeline in ("gpu", "cpu"):
            manifest["schedules"] = schedules.to_dict()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if spec.options.get("bundle"):
            from harmonizer_deploy.compiler.bundle import bundle_unsupported, write_bundle

            why_not = bundle_unsupported(manifest)
            if why_not:
                log.warning(f"no deploy bundle: {why_not} (verify and bench it here or through --rpc)")
                manifest["bundle"] = None
            else:
                manifest["bundle"] = write_bundle(tmp, manifest, model, tmp / "bundle")
            manifest["compile_seconds"] = round(time.perf_counter() - start, 3)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return CompileResult(out_dir, manifest, False, time.perf_counter() - start)


def _io(values: Any, exclude: set[str] | None = None, fix_dims: dict[str, int] | None = None) -> list[dict]:
    exclude = exclude or set()
    fix_dims = fix_dims or {}
    from onnx import helper

    def dtype(v: Any) -> str:
        elem = v.type.tensor_type.elem_type
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem)).name if elem else "float32"

    return [{"name": v.name, "dtype": dtype(v),
             "shape": [fix_dims.get(d.dim_param, d.dim_param) or d.dim_value for d in v.type.tensor_type.shape.dim]}
            for v in values if v.name not in exclude]
