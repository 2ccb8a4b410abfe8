"""How a compiled Relax executable is written to disk, per target (`export = ...` in the target TOML)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import HarmonizerError

Exporter = Callable[[Any, Any, Path], str]  # (executable, TargetSpec, out dir) -> library file name
EXPORTERS: dict[str, Exporter] = {}


def register_exporter(name: str) -> Callable[[Exporter], Exporter]:
    def wrap(fn: Exporter) -> Exporter:
        EXPORTERS[name] = fn
        return fn

    return wrap


def get_exporter(name: str) -> Exporter:
    if name not in EXPORTERS:
        raise HarmonizerError(f"unknown exporter {name!r}", f"known exporters: {', '.join(sorted(EXPORTERS))}")
    return EXPORTERS[name]


@register_exporter("shared-library")
def export_shared_library(executable: Any, spec: Any, out_dir: Path) -> str:
    """A host shared library loadable with `tvm.runtime.load_module` (device kernels embedded)."""
    name = "model.so"
    executable.export_library(str(out_dir / name))
    return name
