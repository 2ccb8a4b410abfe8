"""Compilation pipelines, one small function per family of targets (as in TVM's relax/backend/*/pipeline.py).

A pipeline takes the target spec and the TVM target and returns the Relax pass sequence given to
`tvm.compile`. Targets pick one by name in their TOML (`pipeline = "cpu"`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import HarmonizerError

Pipeline = Callable[[Any, Any], Any]  # (TargetSpec, tvm.target.Target) -> tvm.transform.Pass
PIPELINES: dict[str, Pipeline] = {}


def register_pipeline(name: str) -> Callable[[Pipeline], Pipeline]:
    def wrap(fn: Pipeline) -> Pipeline:
        PIPELINES[name] = fn
        return fn

    return wrap


def get_pipeline(name: str) -> Pipeline:
    if name not in PIPELINES:
        raise HarmonizerError(f"unknown pipeline {name!r}", f"known pipelines: {', '.join(sorted(PIPELINES))}")
    return PIPELINES[name]


@register_pipeline("cpu")
def cpu_pipeline(spec: Any, target: Any) -> Any:
    """TVM's default Relax pipeline for LLVM: legalize, fuse, lower, VM codegen."""
    from tvm import relax

    return relax.get_default_pipeline(target)
