"""How a compiled Relax executable is written to disk, per target (`export = ...` in the target TOML).

An exporter returns the library file name, or `(name, extra)` where `extra` is merged into the manifest (the wasm
exporter records the WebGPU features/limits its kernels need and its link time there).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.registry import Registry

Exporter = Callable[[Any, Any, Path], "str | tuple[str, dict]"]  # (executable, TargetSpec, out dir)
EXPORTERS: Registry[Exporter] = Registry("exporter")
register_exporter = EXPORTERS.register
get_exporter = EXPORTERS.lookup

WEB_PARAMS_BIN = "params.bin"
WEB_PARAMS_INDEX = "params.json"


@register_exporter("shared-library")
def export_shared_library(executable: Any, spec: Any, out_dir: Path) -> str:
    """A host shared library loadable with `tvm.runtime.load_module` (device kernels embedded)."""
    name = "model.so"
    executable.export_library(str(out_dir / name))
    return name


def device_sources(executable: Any, kind: str) -> str:
    """Concatenated source of the device modules of one kind (e.g. the WGSL of every `webgpu` kernel)."""
    found, stack = [], [executable.mod]
    while stack:
        module = stack.pop()
        if getattr(module, "kind", None) == kind:
            found.append(module.inspect_source())
        stack.extend(module.imports)
    return "\n".join(found)


WEB_WEIGHT_ENCODINGS = ("float32", "float16", "uint8")


def _encode(a: np.ndarray, encoding: str) -> tuple[bytes, dict]:
    """One weight tensor as stored for the page: float32; float16; or uint8 with a per-tensor scale and min
    (value = byte x scale + min, the Bach Doodle's TF.js quantization), decoded to float32 at load. Integer
    parameters (an embedding's index bounds, folded shapes) keep their dtype, stored raw: as float32 the model
    would get a tensor of the wrong dtype and stop."""
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.integer):
        raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        return raw.tobytes(), {"dtype": str(a.dtype), "raw": True}
    a = a.astype(np.float32)
    if encoding == "float32" or not np.issubdtype(a.dtype, np.floating):
        return np.ascontiguousarray(a, dtype="<f4").tobytes(), {"dtype": "float32"}
    if encoding == "float16":
        return np.ascontiguousarray(a, dtype="<f2").tobytes(), {"dtype": "float16"}
    low, high = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    scale = (high - low) / 255.0 or 1.0
    q = np.clip(np.rint((a - low) / scale), 0, 255).astype(np.uint8)
    return q.tobytes(), {"dtype": "uint8", "scale": scale, "min": low}


def decode_web_param(data: bytes, entry: dict) -> np.ndarray:
    """The float32 tensor the page gets from one params.json entry (what verify's tolerance is about); an
    integer parameter as it is."""
    if entry.get("raw"):
        return np.frombuffer(data, np.dtype(entry["dtype"]).newbyteorder("<")).reshape(entry["shape"]).copy()
    if entry["dtype"] == "float16":
        return np.frombuffer(data, "<f2").astype(np.float32).reshape(entry["shape"])
    if entry["dtype"] == "uint8":
        values = np.frombuffer(data, np.uint8).astype(np.float32) * entry["scale"] + entry["min"]
        return values.astype(np.float32).reshape(entry["shape"])
    return np.frombuffer(data, "<f4").reshape(entry["shape"]).copy()


def write_web_params(out_dir: Path, arrays: list[np.ndarray], encoding: str = "float32") -> dict:
    """params.bin (concatenated in parameter order, 4-byte aligned) + params.json (shape, dtype, offset per
    parameter): what the page fetches, since a browser cannot read .npz without a zip library. Returns what
    the manifest records: the encoding and the download size."""
    if encoding not in WEB_WEIGHT_ENCODINGS:
        raise HarmonizerError(f"unknown web weight encoding {encoding!r}",
                              f"use one of {', '.join(WEB_WEIGHT_ENCODINGS)}")
    index, offset = [], 0
    with open(out_dir / WEB_PARAMS_BIN, "wb") as handle:
        for a in arrays:
            data, entry = _encode(a, encoding)
            pad = -offset % 4  # typed-array views need aligned offsets
            handle.write(b"\0" * pad)
            offset += pad
            handle.write(data)
            index.append({"shape": list(np.shape(a)), **entry, "offset": offset, "bytes": len(data)})
            offset += len(data)
    (out_dir / WEB_PARAMS_INDEX).write_text(json.dumps({"params": index, "total_bytes": offset,
                                                        "encoding": encoding}) + "\n")
    return {"encoding": encoding, "bytes": offset}


@register_exporter("wasm")
def export_wasm(executable: Any, spec: Any, out_dir: Path) -> tuple[str, dict]:
    """`model.wasm` for TVM's JS runtime, linked by emscripten with TVM's web runtime objects (built once, cached).

    TVM's LLVM (22) writes bitcode that Debian's emscripten (LLVM 14) cannot read, so the host code is exported as
    wasm object files (`object_format = "o"`) instead.
    """
    from tvm.support import emcc

    from harmonizer_deploy.compiler.web.toolchain import (
        LINK_OPT,
        emcc_environment,
        emcc_version,
        runtime_home,
        thread_pool_object,
        threads_link_options,
        threads_manifest,
        tvm_home,
    )
    from harmonizer_deploy.compiler.web.wgsl import requirements

    name = "model.wasm"
    threads = int(spec.options.get("threads") or 0)
    home = runtime_home(threads=bool(threads))
    libs = [str(thread_pool_object())] if threads else None
    extra_options = threads_link_options() if threads else []

    def link(output: str, objects: list[str], options: list[str] | None = None) -> None:
        emcc.create_tvmjs_wasm(output, objects, options=[*(options or []), *extra_options, LINK_OPT], libs=libs)

    link.object_format = "o"  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    with emcc_environment(), tvm_home(home):
        executable.export_library(str(out_dir / name), fcompile=link)
    extra: dict[str, Any] = {"link_seconds": round(time.perf_counter() - t0, 3), "emcc": emcc_version(),
                             "web_params": {"data": WEB_PARAMS_BIN, "index": WEB_PARAMS_INDEX}}
    if threads:
        extra["threads"] = threads_manifest(threads)
    wgsl = device_sources(executable, "webgpu")
    extra["webgpu"] = requirements(wgsl) if wgsl else None
    return name, extra
