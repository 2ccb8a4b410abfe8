"""Compilation pipelines, one small function per family of targets (as in TVM's relax/backend/*/pipeline.py).

A pipeline takes the target spec and the TVM target and returns the Relax pass sequence given to
`tvm.compile`. Targets pick one by name in their TOML (`pipeline = "cpu"`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .errors import HarmonizerError
from .registry import Registry

Pipeline = Callable[[Any, Any], Any]  # (TargetSpec, tvm.target.Target) -> tvm.transform.Pass
PIPELINES: Registry[Pipeline] = Registry("pipeline")
register_pipeline = PIPELINES.register
get_pipeline = PIPELINES.lookup

log = logging.getLogger(__name__)
SCHEDULED_ATTR = "tirx.is_scheduled"


@register_pipeline("cpu")
def cpu_pipeline(spec: Any, target: Any) -> Any:
    """TVM's default Relax pipeline for LLVM: legalize, fuse, lower, VM codegen."""
    from tvm import relax

    return relax.get_default_pipeline(target)


SCHEDULE_RULES = ("Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback")  # dlight.gpu class names


def gpu_schedule_rules(names: list[str] | tuple[str, ...] = SCHEDULE_RULES) -> list[Any]:
    """dlight GPU rules by class name, tried in order (default: most specific first, Fallback last).

    A target picks a subset with `[options] schedule_rules = [...]`: the webgpu target uses only "Fallback" (one
    thread per output element, serial reduction loops), because SwiftShader (the software WebGPU adapter of headless
    Chromium) runs the tiled Matmul kernels too slowly to use (measured: a [1,4,46,8] input did not finish in
    120 s with Matmul, 13 s with Reduction, 7 s with Fallback only, first run including shader compilation).
    """
    from tvm.s_tir.dlight import gpu

    unknown = [n for n in names if n not in SCHEDULE_RULES]
    if unknown:
        raise HarmonizerError(f"unknown schedule rule(s) {', '.join(unknown)} in the target's options",
                              f"use some of: {', '.join(SCHEDULE_RULES)}")
    return [getattr(gpu, n)() for n in names]


def schedule_with_first_rule_that_works(rules: list[Any]) -> Any:
    """Like dlight's ApplyDefaultSchedule, but a rule that raises on one kernel moves on to the next rule.

    Why: on the harmonizer's fused conv+batchnorm+relu kernels dlight's Matmul rule asserts ("consumers of the
    cache-write stage that are not properly inlined") instead of declining; TVM's generic GPU pipeline then
    aborts the whole compile. Each kernel records which rule scheduled it (`harmonizer.schedule_rule`).
    """
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="HarmonizerApplyGpuSchedules")
    def apply(mod: Any, _ctx: Any) -> Any:
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or bool(func.attrs and func.attrs.get(SCHEDULED_ATTR, 0)):
                continue
            target = func.attrs.get("target") if func.attrs else None
            target = target or tvm.target.Target.current(allow_none=False)
            for rule in rules:
                try:
                    space = rule.apply(func, target, False)
                except Exception as exc:  # a rule that cannot handle this kernel: try the next one
                    log.debug("%s failed on %s: %s", type(rule).__name__, gvar.name_hint, exc)
                    continue
                if space is None:
                    continue
                sch = space[0] if isinstance(space, list) else space
                updated[gvar] = (sch.mod["main"].with_attr(SCHEDULED_ATTR, True)
                                 .with_attr("harmonizer.schedule_rule", type(rule).__name__))
                break
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod

    return apply


OPAQUE = 8  # TVM's OpPatternKind::kOpaque: FuseOps never fuses such a kernel with its neighbours


def keep_padding_kernels_apart() -> Any:
    """Mark kernels that write a larger tensor than they read (the ONNX importer's explicit `pad` before each
    'same' conv) as opaque, so FuseOps does not fuse them into the preceding conv.

    Why: fused into a conv epilogue, a pad cannot be inlined (it writes elements the conv never produced), so
    dlight stages the whole conv output in workgroup memory — `batch*64*time*46` floats, with a symbolic size
    that WebGPU cannot allocate at all. Standalone, each pad is one cheap elementwise kernel.
    """
    import tvm
    from tvm import relax

    analyzer = tvm.sym.Analyzer()
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def expands(src: Any, dst: Any) -> bool:
        """Whether tensor `dst` is at least as large as `src` in every axis and larger in one (provably)."""
        src_shape, dst_shape = getattr(src, "shape", None), getattr(dst, "shape", None)
        if not isinstance(src_shape, relax.ShapeExpr) or not isinstance(dst_shape, relax.ShapeExpr):
            return False
        a, b = list(src_shape.values), list(dst_shape.values)
        return (len(a) == len(b) and all(analyzer.can_prove(d >= s) for s, d in zip(a, b, strict=True))
                and any(analyzer.can_prove(d > s) for s, d in zip(a, b, strict=True)))

    @tvm.transform.module_pass(opt_level=0, name="HarmonizerKeepPaddingApart")
    def apply(mod: Any, _ctx: Any) -> Any:
        padding = set()
        for _gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr):
                continue
            for block in func.body.blocks:
                for binding in block.bindings:
                    value = binding.value
                    if (isinstance(value, tvm.ir.Call) and value.op.same_as(call_tir)
                            and isinstance(value.args[1], relax.Tuple) and len(value.args[1].fields) == 1
                            and expands(value.args[1].fields[0].ty, value.ty)):
                        padding.add(value.args[0])
        for gvar in padding:
            mod[gvar] = mod[gvar].with_attr("op_pattern", OPAQUE)
        return mod

    return apply


@register_pipeline("webgpu")
def webgpu_pipeline(spec: Any, target: Any) -> Any:
    """TVM's generic GPU pipeline (legalize, fuse, dlight schedules, lower, plan memory) for WebGPU, with pad
    kernels kept unfused and the schedule step made tolerant of rules that raise; rules from
    `[options] schedule_rules`."""
    import tvm
    from tvm import relax

    passes = [
        relax.backend.DispatchSampling(),
        relax.backend.DispatchSortScan(),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        keep_padding_kernels_apart(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        schedule_with_first_rule_that_works(gpu_schedule_rules(spec.options.get("schedule_rules", SCHEDULE_RULES))),
        relax.transform.RewriteDataflowReshape(),
        relax.transform.ToNonDataflow(),
        relax.transform.RemovePurityChecking(),
        relax.transform.CallTIRRewrite(),
        relax.transform.StaticPlanBlockMemory(),
        relax.transform.LowerAllocTensor(),
        relax.transform.KillAfterLastUse(),
        relax.transform.LowerRuntimeBuiltin(),
        relax.transform.ComputePrimValue(),
        relax.transform.VMShapeLower(),
        relax.transform.AttachGlobalSymbol(),
    ]

    @tvm.transform.module_pass(opt_level=0, name="HarmonizerGpuPipeline")
    def pipeline(mod: Any, _ctx: Any) -> Any:
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return pipeline
