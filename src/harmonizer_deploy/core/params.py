"""Model parameters travel next to the library as a plain `.npz` (ordered), readable without TVM."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError

PARAM_TRANSFORM = "main_transform_params"  # what Relax's LiftTransformParams names the lifted weight transform
PARAMS_FILE = "params.npz"


def save_params(path: Path, names: list[str], arrays: list[np.ndarray]) -> None:
    np.savez(path, **{f"{i:04d}": a for i, a in enumerate(arrays)})


def load_params(path: Path, expected: int | None = None) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = [data[k] for k in sorted(data.files)]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise HarmonizerError(f"cannot read parameters {path}: {type(exc).__name__}: {str(exc)[:200]}",
                              "recompile the artifact") from exc
    if expected is not None and len(arrays) != expected:
        raise HarmonizerError(f"{path} holds {len(arrays)} parameters, the manifest lists {expected}",
                              "recompile the artifact")
    return arrays
