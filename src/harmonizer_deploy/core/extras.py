"""Optional dependencies: which pip extra brings which module, and the one-line error when one is missing.

Why: the core install (ONNX, onnxruntime, TVM) compiles, verifies, benches and harmonizes an ONNX model; TensorFlow,
music21 and MetaSchedule's cost model come with extras, so a command that needs one must say which to install.
"""

from __future__ import annotations

import importlib.util

from harmonizer_deploy.core.errors import HarmonizerError

PACKAGE = "harmonizer-deploy"

# top-level module → the extra of pyproject.toml that installs it
EXTRA_OF = {
    "tensorflow": "convert",
    "tf2onnx": "convert",
    "keras": "convert",
    "music21": "train",
    "cloudpickle": "tune",
    "xgboost": "tune",
    "openvino": "peers",
}


class MissingExtra(HarmonizerError):
    """A module of an optional extra is not installed."""

    def __init__(self, what: str, modules: list[str], extra: str) -> None:
        super().__init__(f"{what} needs {', '.join(modules)}, which {'is' if len(modules) == 1 else 'are'} not "
                         "installed", install_hint(extra))
        self.extra = extra
        self.modules = modules


def install_hint(extra: str) -> str:
    return f"pip install '{PACKAGE}[{extra}]'"


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (a blocked or absent module counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(what: str, *modules: str, extra: str | None = None) -> None:
    """Raise MissingExtra naming the extra to install (`extra`, else the first missing module's) when any of
    `modules` is missing; `what` is the command or feature that needs them."""
    missing = [m for m in modules if not installed(m)]
    if missing:
        raise MissingExtra(what, missing, extra or EXTRA_OF.get(missing[0].split(".")[0], "all"))


def missing_extra_error(exc: ImportError) -> MissingExtra | None:
    """The MissingExtra for an ImportError of a module that an extra provides (None for anything else)."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if not isinstance(exc, ModuleNotFoundError) or name not in EXTRA_OF:
        return None
    return MissingExtra("this command", [name], EXTRA_OF[name])
