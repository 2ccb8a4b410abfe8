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


def write_web_params(out_dir: Path, arrays: list[np.ndarray]) -> None:
    """params.bin (float32, little-endian, concatenated in parameter order) + params.json (shape, offset per
    parameter): what the page fetches, since a browser cannot read .npz without a zip library."""
    index, offset = [], 0
    with open(out_dir / WEB_PARAMS_BIN, "wb") as handle:
        for a in arrays:
            data = np.ascontiguousarray(a, dtype="<f4")
            handle.write(data.tobytes())
            index.append({"shape": list(data.shape), "dtype": "float32", "offset": offset, "bytes": data.nbytes})
            offset += data.nbytes
    (out_dir / WEB_PARAMS_INDEX).write_text(json.dumps({"params": index, "total_bytes": offset}) + "\n")


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
        tvm_home,
    )
    from harmonizer_deploy.compiler.web.wgsl import requirements

    name = "model.wasm"
    home = runtime_home()

    def link(output: str, objects: list[str], options: list[str] | None = None) -> None:
        emcc.create_tvmjs_wasm(output, objects, options=[*(options or []), LINK_OPT])

    link.object_format = "o"  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    with emcc_environment(), tvm_home(home):
        executable.export_library(str(out_dir / name), fcompile=link)
    extra: dict[str, Any] = {"link_seconds": round(time.perf_counter() - t0, 3), "emcc": emcc_version(),
                             "web_params": {"data": WEB_PARAMS_BIN, "index": WEB_PARAMS_INDEX}}
    wgsl = device_sources(executable, "webgpu")
    extra["webgpu"] = requirements(wgsl) if wgsl else None
    return name, extra
