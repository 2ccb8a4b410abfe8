"""How a compiled Relax executable is written to disk, per target (`export = ...` in the target TOML)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .registry import Registry

Exporter = Callable[[Any, Any, Path], str]  # (executable, TargetSpec, out dir) -> library file name
EXPORTERS: Registry[Exporter] = Registry("exporter")
register_exporter = EXPORTERS.register
get_exporter = EXPORTERS.lookup


@register_exporter("shared-library")
def export_shared_library(executable: Any, spec: Any, out_dir: Path) -> str:
    """A host shared library loadable with `tvm.runtime.load_module` (device kernels embedded)."""
    name = "model.so"
    executable.export_library(str(out_dir / name))
    return name
