"""Pack converters for quantized ops TVM 0.27's Relax ONNX frontend lacks: QLinearMatMul, QLinearConv, ConvInteger.

All three are computed the way onnxruntime computes them, so that integer outputs match it exactly: the inputs
are widened to int32 and their zero points subtracted, the product (MatMul, Conv) is accumulated in int32, and
the QLinear ops requantize the accumulator with one float32 multiplier `x_scale * w_scale / y_scale` (per output
channel where the weight scale is), rounding half to even and saturating to the output type. Nothing is
evaluated at import time: scales and zero points may be run-time tensors.

(Static-length sequences, SequenceMap and Scan are pre-passes on the ONNX graph: frontend/sequence.py and
frontend/loop.py.)
"""

from __future__ import annotations

from typing import Any

from harmonizer_deploy.frontend.hook import ConvertContext, Converter, ConverterKey


# pack.py's shared helpers, imported when called: pack.py imports this module to register CONVERTERS, so a
# module-level import would be circular whichever of the two is imported first.
def _relax() -> Any:
    from harmonizer_deploy.frontend.pack import _relax as relax

    return relax()


def _dtype(expr: Any) -> str:
    from harmonizer_deploy.frontend.pack import _dtype as dtype

    return dtype(expr)


def _ndim(expr: Any) -> int:
    from harmonizer_deploy.frontend.pack import _ndim as ndim

    return ndim(expr)


def _builtin(op_type: str, ctx: ConvertContext) -> Any:
    from harmonizer_deploy.frontend.pack import _builtin as builtin

    return builtin(op_type, ctx)

_INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "uint16": (0, 65535)}


def _opt(inputs: list, i: int) -> Any:
    return inputs[i] if len(inputs) > i else None


def _widen(bb: Any, x: Any, zero_point: Any, axis_from_end: int | None = None) -> Any:
    """int32(x) - int32(zero_point); a 1-D zero point of length > 1 is laid along `axis_from_end` (e.g. -2 = rows)."""
    relax = _relax()
    xi = relax.op.astype(x, "int32")
    if zero_point is None:
        return bb.emit(xi)
    zp = bb.normalize(relax.op.astype(zero_point, "int32"))
    return bb.emit(relax.op.subtract(xi, _lay_along(zp, _ndim(x), axis_from_end)))


def _lay_along(v: Any, ndim: int, axis_from_end: int | None) -> Any:
    """A 1-D per-axis tensor reshaped so that it broadcasts along `axis_from_end` of a rank-`ndim` tensor."""
    relax = _relax()
    if axis_from_end is None or _ndim(v) != 1 or axis_from_end == -1:
        return v
    shape = [1] * (-axis_from_end)
    shape[0] = -1
    return relax.op.reshape(v, shape)


def _requantize(bb: Any, acc: Any, multiplier: Any, zero_point: Any, out_dtype: str) -> Any:
    """round_half_even(acc * multiplier) + zero_point, saturated to `out_dtype` (onnxruntime's requantization)."""
    relax = _relax()
    scaled = relax.op.round(relax.op.multiply(relax.op.astype(acc, "float32"), multiplier))
    if zero_point is not None:
        scaled = relax.op.add(scaled, relax.op.astype(zero_point, "float32"))
    lo, hi = _INT_RANGE[out_dtype]
    saturated = relax.op.minimum(relax.op.maximum(bb.emit(scaled), relax.const(lo, "float32")),
                                 relax.const(hi, "float32"))
    return relax.op.astype(saturated, out_dtype)


def _f32(x: Any) -> Any:
    relax = _relax()
    return relax.op.astype(x, "float32") if _dtype(x) != "float32" else x


def qlinear_matmul(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """QLinearMatMul: int32 (a - a_zp) @ (b - b_zp), requantized with a_scale * b_scale / y_scale.

    a's scale and zero point may be per row (1-D of length M), b's per column (1-D of length N)."""
    relax = _relax()
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = (_opt(inputs, i) for i in range(8))
    acc = bb.emit(relax.op.matmul(_widen(bb, a, a_zp, -2), _widen(bb, b, b_zp, -1), out_dtype="int32"))
    a_s = _lay_along(bb.normalize(_f32(a_scale)), 2, -2)
    multiplier = relax.op.divide(relax.op.multiply(a_s, _f32(b_scale)), _f32(y_scale))
    out_dtype = _dtype(y_zp) if y_zp is not None else _dtype(a)
    return _requantize(bb, acc, bb.emit(multiplier), y_zp, out_dtype)


def _integer_conv(bb: Any, x: Any, w: Any, bias: Any, attrs: dict, ctx: ConvertContext) -> Any:
    """TVM's own Conv converter (all its pads/auto_pad/group handling) on int32 operands, int32 out."""
    conv = _builtin("Conv", ctx)
    return bb.normalize(conv(bb, [x, w, bias], dict(attrs), ctx.params))


def conv_integer(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """ConvInteger: int32 conv of (x - x_zp) and (w - w_zp); w's zero point may be per output channel."""
    x, w, x_zp, w_zp = (_opt(inputs, i) for i in range(4))
    ndim = _ndim(w)
    return _integer_conv(bb, _widen(bb, x, x_zp), _widen(bb, w, w_zp, -ndim), None, attrs, ctx)


def qlinear_conv(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """QLinearConv: int32 conv of (x - x_zp), (w - w_zp), plus the int32 bias, requantized per output channel."""
    relax = _relax()
    x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias = (_opt(inputs, i) for i in range(9))
    ndim = _ndim(w)
    acc = _integer_conv(bb, _widen(bb, x, x_zp), _widen(bb, w, w_zp, -ndim), bias, attrs, ctx)
    w_s = _lay_along(bb.normalize(_f32(w_scale)), ndim, -(ndim - 1))  # [C_out] -> [C_out, 1, 1...]
    multiplier = relax.op.divide(relax.op.multiply(_f32(x_scale), w_s), _f32(y_scale))
    out_dtype = _dtype(y_zp) if y_zp is not None else _dtype(x)
    return _requantize(bb, acc, bb.emit(multiplier), y_zp, out_dtype)


def _scalar_axes(node: Any, graph: Any) -> bool:
    """Unsqueeze whose axes input is a 0-d constant (onnxruntime accepts it; Loop bodies from the ONNX tests have
    it, and unrolling brings them to the top level)."""
    from harmonizer_deploy.frontend.pack import _onnx_array

    axes = _onnx_array(node.input[1], graph) if len(node.input) > 1 else None
    return axes is not None and axes.ndim == 0


def unsqueeze_scalar_axes(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Unsqueeze with a 0-d constant axes: TVM's converter iterates the axes value and fails on a scalar."""
    import numpy as np

    from harmonizer_deploy.frontend.pack import _const_value

    relax = _relax()
    axes = np.asarray(_const_value(inputs[1], "Unsqueeze axes", ctx)).reshape(1)
    return _builtin("Unsqueeze", ctx)(bb, [inputs[0], relax.const(axes, "int64")], attrs, ctx.params)


unsqueeze_scalar_axes.applies_to = _scalar_axes  # type: ignore[attr-defined]


CONVERTERS: dict[ConverterKey, Converter] = {
    ("", "QLinearMatMul"): qlinear_matmul,
    ("", "QLinearConv"): qlinear_conv,
    ("", "ConvInteger"): conv_integer,
    ("", "Unsqueeze"): unsqueeze_scalar_axes,
}
