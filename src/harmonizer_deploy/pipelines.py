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


@register_pipeline("gpu")
def gpu_pipeline(spec: Any, target: Any) -> Any:
    """TVM's GPU pipeline (cuda, or the generic one for vulkan/webgpu/metal) with dlight's default schedules
    applied per function: a rule that fails on one function falls back to the next rule for that function
    only, and a function no rule schedules is named in the error. Rules: `[options] schedule_rules`."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.relax.backend.gpu_generic import pipeline as generic

    from .gpu_schedule import DEFAULT_RULES, per_function_schedule

    stages = cuda if target.kind.name == "cuda" else generic
    schedule = per_function_schedule(tuple(spec.options.get("schedule_rules", DEFAULT_RULES)))
    legalize = [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(), schedule]

    @tvm.transform.module_pass(opt_level=0, name="HarmonizerGPUPipeline")
    def _pipeline(mod: Any, _ctx: Any) -> Any:
        with target:
            passes = (stages.library_dispatch_passes(target) + legalize + stages.dataflow_lower_passes(target)
                      + stages.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
