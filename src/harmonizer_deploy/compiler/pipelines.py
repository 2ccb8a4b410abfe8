"""Compilation pipelines, one small function per family of targets (as in TVM's relax/backend/*/pipeline.py).

A pipeline takes the target spec and the TVM target and returns the Relax pass sequence given to
`tvm.compile`. Targets pick one by name in their TOML (`pipeline = "cpu"`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harmonizer_deploy.compiler.scheduling import ScheduleReport
from harmonizer_deploy.core.registry import Registry

# (TargetSpec, tvm.target.Target, ScheduleReport | None) -> tvm.transform.Pass
Pipeline = Callable[..., Any]
PIPELINES: Registry[Pipeline] = Registry("pipeline")
register_pipeline = PIPELINES.register
get_pipeline = PIPELINES.lookup

CPU_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "HWIO"]}


def _calls_ops(mod: Any, names: set[str]) -> bool:
    """Whether any Relax function of `mod` calls one of the ops `names` (e.g. "relax.nn.conv2d")."""
    import tvm
    from tvm import relax

    found = []

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in names:
            found.append(expr)

    for func in mod.functions.values():
        if isinstance(func, relax.Function) and not found:
            relax.analysis.post_order_visit(func.body, visit)
    return bool(found)


def _convert_layout_where_needed() -> Any:
    """ConvertLayout to NHWC only for a module with convolutions: TVM 0.27's pass fails with `tvm::String index
    out of bounds` on some conv-free models (a Keras GRU unrolled by the converter pack), which need no layout."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name="ConvertLayoutWhereConvs")
    def convert(mod: Any, _ctx: Any) -> Any:
        return relax.transform.ConvertLayout(CPU_LAYOUTS)(mod) if _calls_ops(mod, set(CPU_LAYOUTS)) else mod

    return convert


def cpu_front_passes(target: Any, winograd: bool = False) -> list[Any]:
    """Layout, parameter lifting, legalization and fusion: what `tune` extracts tasks from and `compile` applies
    records to, so both see the same kernels.

    NHWC activations with HWIO weights make each convolution a matrix multiply whose output channels are
    contiguous (16-lane vector loads of weights, broadcast inputs); with `winograd`, the 3x3 ones become
    Winograd kernels (`winograd.py`: a third of the multiplies). `LiftTransformParams` moves the weight
    re-layout and Winograd transform into `main_transform_params`, run once when an artifact is loaded
    instead of on every call.
    """
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from harmonizer_deploy.compiler.cpu.separable import fuse_separable
    from harmonizer_deploy.compiler.cpu.winograd import rewrite_conv2d

    fast_convolutions = [rewrite_conv2d()] if winograd else []
    return [_convert_layout_where_needed(), relax.transform.Normalize(), fuse_separable(), *fast_convolutions,
            relax.transform.LiftTransformParams(), *cpu.library_dispatch_passes(target),
            *cpu.legalize_passes(target)]


def uses_winograd(spec: Any) -> bool:
    """`[options] winograd` of a CPU target (off unless the TOML says so)."""
    return bool(spec is not None and spec.options.get("winograd", False))


@register_pipeline("cpu")
def cpu_pipeline(spec: Any, target: Any, schedules: ScheduleReport | None = None) -> Any:
    """NHWC (+ Winograd 3x3 convolutions when `[options] winograd`) + lifted weight transforms + fused kernels,
    then tuned MetaSchedule records where compile found some for this CPU, hand-written schedules
    (`cpu_schedule`) for every kernel without one, and TVM's CPU lowering."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.transform import MetaScheduleApplyDatabase
    from tvm.s_tir import meta_schedule as ms

    from harmonizer_deploy.compiler.cpu.schedule import machine_for, schedule_cpu_kernels

    @tvm.transform.module_pass(opt_level=0, name="HarmonizerCPUPipeline")
    def _pipeline(mod: Any, _ctx: Any) -> Any:
        with target:
            tuned = [MetaScheduleApplyDatabase(enable_warning=False)] if ms.database.Database.current() else []
            passes = [*cpu_front_passes(target, winograd=uses_winograd(spec)), *tuned,
                      schedule_cpu_kernels(schedules, machine_for(spec.options)),
                      *cpu.dataflow_lower_passes(target), *cpu.finalize_passes(target)]
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


@register_pipeline("cpu-default")
def cpu_default_pipeline(spec: Any, target: Any, schedules: ScheduleReport | None = None) -> Any:
    """TVM's default CPU pipeline, unscheduled loops and weights taken as stored: for runtimes that cannot run
    the `cpu` pipeline's output (the wasm page has one thread and calls only `main`)."""
    from tvm import relax

    return relax.get_default_pipeline(target)


@register_pipeline("gpu")
def gpu_pipeline(spec: Any, target: Any, schedules: ScheduleReport | None = None) -> Any:
    """TVM's GPU pipeline (cuda, or the generic one for vulkan/webgpu/metal) with dlight's default schedules
    applied per function: a rule that fails on one function falls back to the next rule for that function
    only, and a function no rule schedules is named in the error. Rules: `[options] schedule_rules`."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.relax.backend.gpu_generic import pipeline as generic

    from harmonizer_deploy.compiler.gpu.schedule import DEFAULT_RULES, per_function_schedule

    stages = cuda if target.kind.name == "cuda" else generic
    schedule = per_function_schedule(tuple(spec.options.get("schedule_rules", DEFAULT_RULES)), schedules)
    legalize = [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(), schedule]

    @tvm.transform.module_pass(opt_level=0, name="HarmonizerGPUPipeline")
    def _pipeline(mod: Any, _ctx: Any) -> Any:
        with target:
            passes = (stages.library_dispatch_passes(target) + legalize + stages.dataflow_lower_passes(target)
                      + stages.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
