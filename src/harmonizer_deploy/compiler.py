"""ONNX → TVM Relax → a compiled artifact directory: library, params and a manifest.

Re-running with nothing changed reuses the artifact: the cache key covers the model hash, TVM version,
resolved target JSON, pipeline and exporter.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .artifacts import atomic_dir, sha256_file, sha256_text
from .conversion import check_onnx_file, sidecar_path_for
from .exporters import get_exporter
from .params import PARAMS_FILE, save_params
from .pipelines import get_pipeline
from .targets import TargetSpec, load_target

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
                "artifacts": self.manifest["artifacts"], "cache_key": self.manifest["cache_key"]}


def tvm_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import tvm

    out = {"tvm": tvm.__version__}
    for pkg in ("apache-tvm", "apache-tvm-ffi", "mlc-ai"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def cache_key(model_sha: str, spec: TargetSpec, fix_dims: dict[str, int] | None = None) -> str:
    extra = {"fix_dims": fix_dims} if fix_dims else {}  # absent when unused: existing cache keys stay valid
    return sha256_text(json.dumps({
        **extra, "model": model_sha, "tvm": tvm_versions(), "target": spec.resolved_target(),
        "host": spec.resolved_host(),
        "pipeline": spec.pipeline, "export": spec.export, "options": spec.options, "harmonizer_deploy": __version__,
    }, sort_keys=True))


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
    for name, info in manifest.get("artifacts", {}).items():
        f = out_dir / name
        if not f.is_file() or sha256_file(f) != info["sha256"]:
            return None
    return manifest


def import_onnx(
    onnx_model: Any, fix_dims: dict[str, int] | None = None
) -> tuple[Any, list[str], list[np.ndarray], Any]:
    """Relax import with weights split out as parameters (they ship separately, as params.npz).

    Before import: decomposed custom ops are inlined, named input dims optionally fixed (`fix_dims`), and shape
    computations folded (the returned report says what). Custom-domain nodes go to the registry's Relax
    converters through the domain-aware hook: a node without one fails instead of being taken for a built-in.
    """
    from tvm import relax

    from .custom_ops import default_registry
    from .custom_ops.tvm_prepare import import_relax, prepare_for_tvm

    onnx_model, report = prepare_for_tvm(onnx_model, fix_dims=fix_dims)
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
    fix_dims: dict[str, int] | None = None,
) -> CompileResult:
    """Compile an ONNX model for `target` (a name in targets/) into `output` (default build/<target>).

    `fix_dims` (e.g. {"batch": 1, "time": 32}) compiles for those sizes only, which lets shape computations
    that depend on them fold away before TVM import.
    """
    import tvm

    start = time.perf_counter()
    spec = load_target(target)
    spec.check_buildable()
    model = Path(model)
    out_dir = Path(output) if output else Path("build") / spec.name
    onnx_model = check_onnx_file(model)
    model_sha = sha256_file(model)
    key = cache_key(model_sha, spec, fix_dims)
    if not force and (manifest := _cached_manifest(out_dir, key)):
        return CompileResult(out_dir, manifest, True, time.perf_counter() - start)

    mod, names, arrays, prepare_report = import_onnx(onnx_model, fix_dims)
    tvm_target = spec.tvm_target()
    pipeline = get_pipeline(spec.pipeline)(spec, tvm_target)
    executable = tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline)
    sidecar = sidecar_path_for(model)
    with atomic_dir(out_dir) as tmp:
        library = get_exporter(spec.export)(executable, spec, tmp)
        save_params(tmp / PARAMS_FILE, names, arrays)
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
            "tvm_import": prepare_report.to_dict(),
            "outputs": _io(onnx_model.graph.output),
            "library": library,
            "params": names,
            "artifacts": {f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size} for f in files},
            "compile_seconds": round(time.perf_counter() - start, 3),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return CompileResult(out_dir, manifest, False, time.perf_counter() - start)


def _io(values: Any, exclude: set[str] | None = None, fix_dims: dict[str, int] | None = None) -> list[dict]:
    exclude = exclude or set()
    fix_dims = fix_dims or {}
    return [{"name": v.name, "dtype": "float32",
             "shape": [fix_dims.get(d.dim_param, d.dim_param) or d.dim_value for d in v.type.tensor_type.shape.dim]}
            for v in values if v.name not in exclude]
