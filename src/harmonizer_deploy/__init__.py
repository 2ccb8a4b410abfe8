"""harmonizer-deploy: Coconet from TensorFlow to ONNX to TVM/MLC, verified against onnxruntime.

The library API mirrors the CLI: `convert`, `compile`, `verify`, `bench`, `doctor`.
Heavy dependencies (TensorFlow, TVM) load only when a function that needs them is called.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["bench", "compile", "convert", "doctor", "verify"]


def __getattr__(name: str):
    if name == "convert":
        from .conversion import convert

        return convert
    if name == "compile":
        from .compiler import compile

        return compile
    if name == "verify":
        from .verification import verify

        return verify
    if name == "bench":
        from .benchmark import bench

        return bench
    if name == "doctor":
        from .diagnostics import doctor

        return doctor
    raise AttributeError(f"module 'harmonizer_deploy' has no attribute {name!r}")
