"""Depthwise-separable layers as one kernel: the depthwise (dilated) convolution feeding a 1x1 convolution.

The Bach Doodle's 33 layers are each a depthwise 3x3 (groups = channels, dilations up to 16 x 32) followed by
a pointwise 1x1 (one of them split into 4 groups). As two kernels, every layer writes the depthwise result
(batch x time x 46 x 128 floats) to memory and reads it back, and pays two parallel launches. Fused, each
row (or, for rows too wide for L1, each register tile) of the pointwise product first computes its depthwise
outputs (all channels, 23 KB for the Doodle's row, which stays in L1), then multiplies them by the pointwise
weights; bias, residual and ReLU still fuse
after the kernel (`KERNEL_PATTERN`). The sums are the same ones in the same order, so results do not change.

`fuse_separable` rewrites qualifying Relax conv2d pairs; `schedule.schedule_separable` schedules the kernel.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

KERNEL_PATTERN = 4  # Relax OpPatternKind kOutEWiseFusable: bias, residual and ReLU fuse after the kernel
DEPTHWISE = "separable_depthwise"       # block of the depthwise stage (the schedule looks for it by name)
POINTWISE = "conv2d_nhwc_separable"     # the pointwise stage: a 7-loop NHWC conv block, as the register tile expects
FUNCTION = "separable_conv2d"


def separable_conv2d_nhwc(data: Any, depthwise_weight: Any, pointwise_weight: Any, padding: tuple[int, ...],
                          dilation: tuple[int, int], groups: int) -> Any:
    """pointwise(depthwise(data)) for NHWC `data`, HWIO weights (kh, kw, 1, C) and (1, 1, C / groups, K), stride
    1; `padding` is (top, left, bottom, right) zeros, read as a condition on each tap instead of a padded copy."""
    from tvm import sym, te, tirx

    batch, height, width, channels = data.shape
    kernel_h, kernel_w = (int(d) for d in depthwise_weight.shape[:2])
    top, left, bottom, right = padding
    dil_h, dil_w = dilation
    simplify = sym.Analyzer().simplify  # SAME padding: the output keeps the input's (symbolic) time length
    out_h = simplify(height + top + bottom - dil_h * (kernel_h - 1))
    out_w = simplify(width + left + right - dil_w * (kernel_w - 1))
    ky = te.reduce_axis((0, kernel_h), name="ky")
    kx = te.reduce_axis((0, kernel_w), name="kx")

    def tap(n: Any, y: Any, x: Any, c: Any) -> Any:
        row, col = y + ky * dil_h - top, x + kx * dil_w - left
        inside = tirx.all(row >= 0, row < height, col >= 0, col < width)
        return tirx.if_then_else(inside, data[n, row, col, c], tirx.const(0, data.dtype))

    depthwise = te.compute((batch, out_h, out_w, channels),
                           lambda n, y, x, c: te.sum(tap(n, y, x, c) * depthwise_weight[ky, kx, 0, c], axis=[ky, kx]),
                           name=DEPTHWISE)
    group_in, out_channels = pointwise_weight.shape[2], pointwise_weight.shape[3]
    group_out = out_channels // groups
    one_y = te.reduce_axis((0, 1), name="py")
    one_x = te.reduce_axis((0, 1), name="px")
    rc = te.reduce_axis((0, group_in), name="rc")

    def channel(k: Any) -> Any:
        return rc if groups == 1 else k // group_out * group_in + rc

    return te.compute(
        (batch, out_h, out_w, out_channels),
        lambda n, y, x, k: te.sum(depthwise[n, y + one_y, x + one_x, channel(k)]
                                  * pointwise_weight[one_y, one_x, rc, k], axis=[one_y, one_x, rc]),
        name=POINTWISE)


def _static_ints(values: Any) -> list[int] | None:
    from tvm import tirx

    values = list(values)
    return [int(v) for v in values] if all(isinstance(v, tirx.IntImm | int) for v in values) else None


def _conv_attrs_ok(call: Any) -> bool:
    attrs = call.attrs
    return ((attrs.data_layout, attrs.kernel_layout, attrs.out_layout) == ("NHWC", "HWIO", "NHWC")
            and [int(v) for v in attrs.strides] == [1, 1]
            and all(arg.ty.dtype == "float32" and arg.ty.shape is not None for arg in call.args))


def is_depthwise(call: Any) -> bool:
    """NHWC/HWIO float32 conv2d, stride 1, one input channel per group (groups = channels, multiplier 1),
    static kernel and channels."""
    from tvm import relax

    if not isinstance(call, relax.Call) or getattr(call.op, "name", None) != "relax.nn.conv2d":
        return False
    if not _conv_attrs_ok(call):
        return False
    weight = _static_ints(call.args[1].ty.shape)
    data_channels = _static_ints(list(call.args[0].ty.shape)[3:])
    return (weight is not None and data_channels is not None and weight[2] == 1
            and int(call.attrs.groups) == weight[3] == data_channels[0])


def is_pointwise(call: Any) -> bool:
    """NHWC/HWIO float32 1x1 conv2d, stride 1, no padding or dilation, static channels (any group count)."""
    from tvm import relax

    if not isinstance(call, relax.Call) or getattr(call.op, "name", None) != "relax.nn.conv2d":
        return False
    if not _conv_attrs_ok(call) or [int(v) for v in call.attrs.padding] != [0, 0, 0, 0]:
        return False
    if [int(v) for v in call.attrs.dilation] != [1, 1]:
        return False
    weight = _static_ints(call.args[1].ty.shape)
    groups = int(call.attrs.groups)
    return weight is not None and weight[:2] == [1, 1] and weight[3] % groups == 0


def _uses(func: Any) -> Counter:
    """How often each Relax variable of `func` is read (binding values and the function's result)."""
    from tvm import relax

    uses: Counter = Counter()

    def count(expr: Any) -> None:
        if isinstance(expr, relax.Var):
            uses[expr] += 1

    body = func.body
    for block in body.blocks:
        for binding in block.bindings:
            relax.analysis.post_order_visit(binding.value, count)
    relax.analysis.post_order_visit(body.body, count)
    return uses


def fuse_separable() -> Any:
    """A Relax module pass: a depthwise conv2d whose only reader is a 1x1 conv2d becomes one separable kernel
    (the depthwise call is then dead and removed)."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class _Rewriter(relax.PyExprMutator):
        def __init__(self, mod: Any) -> None:
            super().__init__(mod)
            self.uses: Counter = Counter()
            self.fused = 0

        def visit_call_(self, call: Any) -> Any:
            source = call.args[0] if isinstance(call, relax.Call) and call.args else None
            call = super().visit_call_(call)
            if not is_pointwise(call) or not isinstance(source, relax.Var) or self.uses[source] != 1:
                return call
            depthwise = self.lookup_binding(call.args[0])
            if not is_depthwise(depthwise):
                return call
            data, weight = depthwise.args
            attrs = depthwise.attrs
            self.fused += 1
            return self.builder_.emit_te(
                separable_conv2d_nhwc, data, weight, call.args[1], tuple(int(v) for v in attrs.padding),
                tuple(int(v) for v in attrs.dilation), int(call.attrs.groups), primfunc_name_hint=FUNCTION)

    @tvm.transform.module_pass(opt_level=0, name="HarmonizerFuseSeparableConv2d")
    def _pass(mod: Any, _ctx: Any) -> Any:
        rewriter = _Rewriter(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function) and isinstance(func.body, relax.SeqExpr):
                rewriter.uses = _uses(func)
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        if not rewriter.fused:  # nothing separable: the module as it came
            return mod
        updated = rewriter.builder_.get()
        for gvar, func in updated.functions_items():  # let FuseOps put the epilogue into the kernel
            if gvar.name_hint.startswith(FUNCTION):
                updated[gvar] = func.with_attr("op_pattern", KERNEL_PATTERN)
        return relax.transform.DeadCodeElimination()(updated)

    return _pass
