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

from . import __version__
from .artifacts import atomic_dir, sha256_file, sha256_text
from .conversion import check_onnx_file, sidecar_path_for
from .exporters import get_exporter, write_web_params
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


def cache_key(model_sha: str, spec: TargetSpec) -> str:
    return sha256_text(json.dumps({
        "model": model_sha, "tvm": tvm_versions(), "target": spec.resolved_target(), "host": spec.resolved_host(),
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


def import_onnx(onnx_model: Any) -> tuple[Any, list[str], list[np.ndarray]]:
    """Relax import with weights split out as parameters (they ship separately, as params.npz)."""
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(with_identifier_weight_names(onnx_model), keep_params_in_input=True)
    mod, params = relax.frontend.detach_params(mod)
    arrays = [p.numpy() for p in params.get("main", [])]
    names = [str(v.name) for v in mod["main"].params[-len(arrays):]] if arrays else []
    return mod, names, arrays


def compile(
    model: str | Path = "build/model.onnx",
    target: str = "cpu",
    output: str | Path | None = None,
    force: bool = False,
) -> CompileResult:
    """Compile an ONNX model for `target` (a name in targets/) into `output` (default build/<target>)."""
    import tvm

    start = time.perf_counter()
    spec = load_target(target)
    spec.check_buildable()
    model = Path(model)
    out_dir = Path(output) if output else Path("build") / spec.name
    onnx_model = check_onnx_file(model)
    model_sha = sha256_file(model)
    key = cache_key(model_sha, spec)
    if not force and (manifest := _cached_manifest(out_dir, key)):
        return CompileResult(out_dir, manifest, True, time.perf_counter() - start)

    mod, names, arrays = import_onnx(onnx_model)
    tvm_target = spec.tvm_target()
    pipeline = get_pipeline(spec.pipeline)(spec, tvm_target)
    executable = tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline)
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
            "inputs": _io(onnx_model.graph.input, exclude={i.name for i in onnx_model.graph.initializer}),
            "outputs": _io(onnx_model.graph.output),
            "library": library,
            "params": names,
            "artifacts": {f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size} for f in files},
            "compile_seconds": round(time.perf_counter() - start, 3),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **extra,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return CompileResult(out_dir, manifest, False, time.perf_counter() - start)


def _io(values: Any, exclude: set[str] | None = None) -> list[dict]:
    exclude = exclude or set()
    return [{"name": v.name, "dtype": "float32",
             "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]}
            for v in values if v.name not in exclude]
