"""harmonizer-deploy: Coconet from TensorFlow to ONNX to TVM/MLC, verified against onnxruntime.

The library API mirrors the CLI: `convert`, `compile`, `verify`, `bench`, `doctor`.
Heavy dependencies (TensorFlow, TVM) load only when a function that needs them is called.
"""

from __future__ import annotations

from harmonizer_deploy.core.version import __version__ as __version__

__all__ = ["bench", "compile", "convert", "doctor", "verify"]


def __getattr__(name: str):
    if name == "convert":
        from harmonizer_deploy.conversion.convert import convert

        return convert
    if name == "compile":
        from harmonizer_deploy.compiler.build import compile

        return compile
    if name == "verify":
        from harmonizer_deploy.verification.verify import verify

        return verify
    if name == "bench":
        from harmonizer_deploy.benchmark.bench import bench

        return bench
    if name == "doctor":
        from harmonizer_deploy.run.doctor import doctor

        return doctor
    raise AttributeError(f"module 'harmonizer_deploy' has no attribute {name!r}")
