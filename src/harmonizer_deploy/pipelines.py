"""Compilation pipelines, one small function per family of targets (as in TVM's relax/backend/*/pipeline.py).

A pipeline takes the target spec and the TVM target and returns the Relax pass sequence given to
`tvm.compile`. Targets pick one by name in their TOML (`pipeline = "cpu"`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .registry import Registry

Pipeline = Callable[[Any, Any], Any]  # (TargetSpec, tvm.target.Target) -> tvm.transform.Pass
PIPELINES: Registry[Pipeline] = Registry("pipeline")
register_pipeline = PIPELINES.register
get_pipeline = PIPELINES.lookup


@register_pipeline("cpu")
def cpu_pipeline(spec: Any, target: Any) -> Any:
    """With a MetaSchedule database in context (compile found tuned records): apply it. Otherwise TVM's default
    Relax pipeline for LLVM (legalize, fuse, lower, VM codegen), whose kernels are unscheduled loops."""
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    if ms.database.Database.current() is not None:
        from .tuning import tuned_cpu_pipeline

        return tuned_cpu_pipeline(target)
    return relax.get_default_pipeline(target)
