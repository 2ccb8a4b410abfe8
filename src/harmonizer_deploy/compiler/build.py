"""ONNX → TVM Relax → a compiled artifact directory: library, params and a manifest.

Re-running with nothing changed reuses the artifact: the cache key covers the model hash, TVM version,
resolved target JSON, pipeline and exporter.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.compiler.exporters import get_exporter, write_web_params
from harmonizer_deploy.compiler.pipelines import get_pipeline
from harmonizer_deploy.compiler.targets import TargetSpec, load_target
from harmonizer_deploy.compiler.versions import tvm_versions
from harmonizer_deploy.conversion.convert import check_onnx_file, sidecar_path_for
from harmonizer_deploy.core.artifacts import atomic_dir, sha256_file, sha256_text
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.limits import check_elements
from harmonizer_deploy.core.params import PARAMS_FILE, save_params
from harmonizer_deploy.core.version import __version__

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
    """Hash of this package's Python sources: a changed pipeline or schedule must not reuse old artifacts
    (the version string alone does not change between commits)."""
    package = Path(__file__).parents[1]
    return sha256_text("".join(sha256_file(p) for p in sorted(package.rglob("*.py"))))


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


def _build(mod: Any, tvm_target: Any, pipeline: Any, spec: TargetSpec) -> Any:
    """tvm.compile, with the GPU error users hit most ("Did you forget to bind?") turned into one clear line."""
    import tvm

    try:
        return tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline)
    except Exception as exc:
        from harmonizer_deploy.compiler.gpu.schedule import take_failure

        if (failure := take_failure()) is not None:
            raise failure from None
        if "Did you forget to bind" not in str(exc):
            raise
        raise HarmonizerError(
            f"a GPU kernel for target {spec.name!r} has loops not bound to threads (\"Did you forget to bind?\")",
            "schedule every function (pipeline = \"gpu\" does, per function) or add a rule to [options] "
            "schedule_rules",
        ) from exc


def with_identifier_weight_names(onnx_model: Any) -> Any:
    """A copy of the model whose weight names are plain identifiers (`conv0_1/convolution:0` → `conv0_1_convolution_0`).

    Why: the weight names become kernel parameter names, and TVM's WebGPU code generator writes them into WGSL
    unchanged, where `/` and `:` are syntax errors. Harmless for the other targets.
    """
    model = type(onnx_model)()
    model.CopyFrom(onnx_model)
    graph = model.graph
    taken = ({v.name for v in graph.input} | {v.name for v in graph.output} | {o for n in graph.node for o in n.output}
             | {i.name for i in graph.initializer})
    renamed: dict[str, str] = {}
    for init in graph.initializer:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", init.name):
            continue
        base = re.sub(r"\W", "_", init.name).lstrip("_0123456789") or "weight"
        new, i = base, 1
        while new in taken or new in renamed.values():
            new, i = f"{base}_{i}", i + 1
        renamed[init.name] = new
        init.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for value in graph.input:
        if value.name in renamed:
            value.name = renamed[value.name]
    return model



def import_onnx(
    onnx_model: Any, fix_dims: dict[str, int] | None = None
) -> tuple[Any, list[str], list[np.ndarray], Any]:
    """Relax import with weights split out as parameters (they ship separately, as params.npz).

    Before import: decomposed custom ops are inlined, named input dims optionally fixed (`fix_dims`), and shape
    computations folded (the returned report says what). Custom-domain nodes go to the registry's Relax
    converters through the domain-aware hook: a node without one fails instead of being taken for a built-in.
    """
    from tvm import relax

    from harmonizer_deploy.custom_ops import default_registry
    from harmonizer_deploy.custom_ops.tvm_prepare import import_relax, prepare_for_tvm

    onnx_model, report = prepare_for_tvm(with_identifier_weight_names(onnx_model), fix_dims=fix_dims)
    mod = import_relax(onnx_model, default_registry().tvm_converters(), keep_params_in_input=True)
    mod, params = relax.frontend.detach_params(mod)
    arrays = [p.numpy() for p in params.get("main", [])]
    names = [str(v.name) for v in mod["main"].params[-len(arrays):]] if arrays else []
    return mod, names, arrays, report


def compile(
    model: str | Path = "build/model.onnx",
    target: str = "cpu",
    output: str | Path | None = None,
    force: bool = False,
    batch: int | None = None,
    time_steps: int | None = None,
    arch: str | None = None,
    fix_dims: dict[str, int] | None = None,
) -> CompileResult:
    """Compile an ONNX model for `target` (a name in targets/) into `output` (default build/<target>).

    With `batch` and `time_steps` (shorthand for `fix_dims={"batch": B, "time": T}`) the artifact has static shapes
    and uses tuned records when some match this CPU (see `harmonizer-deploy tune`); without them it accepts any
    batch and length. `fix_dims` fixes named input dims so shape computations fold away before TVM import. `arch`
    picks the GPU architecture (e.g. sm_90) of a target that lists `[options] archs`; by default it is detected."""
    import contextlib

    from harmonizer_deploy.compiler.tuning import find_records

    start = time.perf_counter()
    spec = load_target(target)
    if arch:
        spec = spec.with_arch(arch)
    spec.check_buildable()
    model = Path(model)
    out_dir = Path(output) if output else Path("build") / spec.name
    onnx_model = check_onnx_file(model)
    model_sha = sha256_file(model)
    fix_dims = static_dims(batch, time_steps, fix_dims)
    check_fixed_dims(onnx_model, fix_dims)
    shape = (fix_dims["batch"], fix_dims["time"]) if {"batch", "time"} <= fix_dims.keys() else None
    records, why = find_records(spec, shape)
    tuning = records.describe() if records else None
    key = cache_key(model_sha, spec, fix_dims, tuning)
    if not force and (manifest := _cached_manifest(out_dir, key)):
        return CompileResult(out_dir, manifest, True, time.perf_counter() - start)

    mod, names, arrays, prepare_report = import_onnx(onnx_model, fix_dims or None)
    tvm_target = spec.tvm_target()
    with records.database() if records else contextlib.nullcontext():
        pipeline = get_pipeline(spec.pipeline)(spec, tvm_target)
        executable = _build(mod, tvm_target, pipeline, spec)
    sidecar = sidecar_path_for(model)
    with atomic_dir(out_dir) as tmp:
        exported = get_exporter(spec.export)(executable, spec, tmp)
        library, extra = exported if isinstance(exported, tuple) else (exported, {})
        save_params(tmp / PARAMS_FILE, names, arrays)
        if "web_params" in extra:
            write_web_params(tmp, arrays)
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
            "tolerance": {"atol": spec.atol, "rtol": spec.rtol},
            "cache_key": key,
            "versions": {**tvm_versions(), "harmonizer_deploy": __version__},
            "model": {"path": str(model.resolve()), "sha256": model_sha,
                      "sidecar": str(sidecar.resolve()) if sidecar.is_file() else None},
            "inputs": _io(onnx_model.graph.input, exclude={i.name for i in onnx_model.graph.initializer},
                          fix_dims=fix_dims),
            "static_shape": list(shape) if shape else None,
            "tuning": tuning or {"used": False, "reason": why},
            "tvm_import": prepare_report.to_dict(),
            "outputs": _io(onnx_model.graph.output),
            "library": library,
            "params": names,
            "artifacts": {f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size} for f in files},
            "compile_seconds": round(time.perf_counter() - start, 3),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **extra,
        }
        if spec.pipeline in ("gpu", "cpu"):
            from harmonizer_deploy.compiler.cpu.schedule import last_report as cpu_report
            from harmonizer_deploy.compiler.gpu.schedule import last_report as gpu_report

            manifest["schedules"] = gpu_report() if spec.pipeline == "gpu" else {"functions": cpu_report()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if spec.options.get("bundle"):
            from harmonizer_deploy.compiler.bundle import write_bundle

            manifest["bundle"] = write_bundle(tmp, manifest, model, tmp / "bundle")
            manifest["compile_seconds"] = round(time.perf_counter() - start, 3)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return CompileResult(out_dir, manifest, False, time.perf_counter() - start)


def _io(values: Any, exclude: set[str] | None = None, fix_dims: dict[str, int] | None = None) -> list[dict]:
    exclude = exclude or set()
    fix_dims = fix_dims or {}
    return [{"name": v.name, "dtype": "float32",
             "shape": [fix_dims.get(d.dim_param, d.dim_param) or d.dim_value for d in v.type.tensor_type.shape.dim]}
            for v in values if v.name not in exclude]
