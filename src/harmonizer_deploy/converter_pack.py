"""Converters TVM 0.27's Relax ONNX frontend lacks or gets wrong, installed through `tvm_hook` (no TVM edits).

Started with the ops a music model needs. Each converter is checked by the ONNX node tests
(`harmonizer-deploy coverage -k OP`, column "TVM + our pack"). Converters that need a value known at
import time (window sizes, sequence lengths, axes) read it from a constant input, which is how exported
models carry them; they raise a clear error otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .tvm_hook import ConvertContext, Converter, ConverterKey


def _relax() -> Any:
    from tvm import relax

    return relax


def _const_value(expr: Any, what: str, ctx: ConvertContext | None = None) -> np.ndarray:
    """The numpy value of a relax.Constant input (an initializer or Constant node in the ONNX model)."""
    import tvm

    if isinstance(expr, tvm.ir.GenericConst):
        value = expr.value
        return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    if ctx is not None and isinstance(expr, tvm.relax.Var):  # an initializer kept as a parameter
        _nodes, params = ctx.params
        if expr.name_hint in params:
            return params[expr.name_hint][1].numpy()
    raise ValueError(f"{what} must be a constant (an initializer) for this converter, got {type(expr).__name__}")


def _ndim(expr: Any) -> int:
    return int(expr.ty.ndim)


def _shape(expr: Any) -> list[int]:
    return [int(d) for d in expr.ty.shape]


def _dtype(expr: Any) -> str:
    return str(expr.ty.dtype)


_LOW_PRECISION = ("float16", "bfloat16")


def swish(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Swish(x) = x * sigmoid(alpha * x)."""
    relax = _relax()
    x = inputs[0]
    alpha = relax.const(float(attrs.get("alpha", 1.0)), _dtype(x))
    return relax.op.multiply(x, relax.op.sigmoid(relax.op.multiply(alpha, x)))


def celu(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Celu(x) = max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    relax = _relax()
    x = inputs[0]
    in_dt = _dtype(x)
    dt = "float32" if in_dt in _LOW_PRECISION else in_dt  # exp in bfloat16/float16 is too coarse
    xc = relax.op.astype(x, dt) if dt != in_dt else x
    alpha = relax.const(float(attrs.get("alpha", 1.0)), dt)
    zero, one = relax.const(0.0, dt), relax.const(1.0, dt)
    neg = relax.op.multiply(alpha, relax.op.subtract(relax.op.exp(relax.op.divide(xc, alpha)), one))
    y = relax.op.add(relax.op.maximum(zero, xc), relax.op.minimum(zero, neg))
    return relax.op.astype(y, in_dt) if dt != in_dt else y


def layer_normalization(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """All three outputs (Y, Mean, InvStdDev); TVM returns placeholders for the last two."""
    relax = _relax()
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    ndim = _ndim(x)
    axis = int(attrs.get("axis", -1))
    axis = axis + ndim if axis < 0 else axis
    eps = float(attrs.get("epsilon", 1e-5))
    stash = int(attrs.get("stash_type", 1))
    in_dt = _dtype(x)
    calc_dt = "float32" if stash == 1 else in_dt
    xc = relax.op.astype(x, calc_dt) if calc_dt != in_dt else x
    axes = list(range(axis, ndim))
    mean = bb.emit(relax.op.mean(xc, axes, keepdims=True))
    centered = bb.emit(relax.op.subtract(xc, mean))
    var = relax.op.mean(relax.op.multiply(centered, centered), axes, keepdims=True)
    inv_std = bb.emit(relax.op.rsqrt(relax.op.add(var, relax.const(eps, calc_dt))))
    normalized = relax.op.multiply(centered, inv_std)
    if calc_dt != in_dt:
        normalized = relax.op.astype(normalized, in_dt)
    y = relax.op.multiply(normalized, scale)
    if bias is not None:
        y = relax.op.add(y, bias)
    return relax.Tuple([bb.emit(y), mean, inv_std])


def lp_normalization(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """x / ||x||_p along `axis` (p is 1 or 2)."""
    relax = _relax()
    x = inputs[0]
    axis = int(attrs.get("axis", -1))
    p = int(attrs.get("p", 2))
    if p == 1:
        norm = relax.op.sum(relax.op.abs(x), [axis], keepdims=True)
    elif p == 2:
        norm = relax.op.sqrt(relax.op.sum(relax.op.multiply(x, x), [axis], keepdims=True))
    else:
        raise ValueError(f"LpNormalization p={p}: ONNX allows only 1 or 2")
    # A zero vector stays zero (the reference divides by 1 there instead of producing 0/0 = NaN).
    dt = _dtype(x)
    norm = bb.emit(norm)
    safe = relax.op.where(relax.op.equal(norm, relax.const(0, dt)), relax.const(1, dt), norm)
    return relax.op.divide(x, safe)


def cum_prod(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """CumProd with exclusive/reverse; the axis input must be constant."""
    relax = _relax()
    x = inputs[0]
    axis = int(np.asarray(_const_value(inputs[1], "CumProd axis")).reshape(-1)[0])
    axis = axis + _ndim(x) if axis < 0 else axis
    shape, dtype = _shape(x), _dtype(x)
    if attrs.get("reverse", 0):
        x = bb.emit(relax.op.flip(x, axis))
    y = bb.emit(relax.op.cumprod(x, axis))
    if attrs.get("exclusive", 0):
        n = shape[axis]
        ones_shape = list(shape)
        ones_shape[axis] = 1
        ones = relax.op.ones(ones_shape, dtype)
        head = relax.op.strided_slice(y, [axis], [0], [max(n - 1, 0)])
        y = relax.op.concat([ones, head], axis)
    if attrs.get("reverse", 0):
        y = relax.op.flip(y, axis)
    return y


def _window(kind: str) -> Converter:
    """Hann/Hamming/Blackman window of a constant size, computed at import time."""

    def convert(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
        import onnx

        relax = _relax()
        size = int(np.asarray(_const_value(inputs[0], f"{kind}Window size")).reshape(-1)[0])
        periodic = int(attrs.get("periodic", 1))
        denom = size if periodic else size - 1
        n = np.arange(size, dtype=np.float64)
        phase = 2.0 * np.pi * n / denom if denom > 0 else np.zeros(size)
        if kind == "Hann":
            w = 0.5 - 0.5 * np.cos(phase)
        elif kind == "Hamming":
            w = 25.0 / 46.0 - (21.0 / 46.0) * np.cos(phase)
        else:
            w = 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2.0 * phase)
        dt = onnx.helper.tensor_dtype_to_np_dtype(int(attrs.get("output_datatype", onnx.TensorProto.FLOAT)))
        return relax.const(w.astype(dt))

    convert.__name__ = f"{kind.lower()}_window"
    return convert


def reverse_sequence(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Reverse the first seq_len[b] steps of each batch entry; sequence_lens must be constant."""
    relax = _relax()
    x = inputs[0]
    lens = np.asarray(_const_value(inputs[1], "ReverseSequence sequence_lens")).astype(np.int64)
    batch_axis = int(attrs.get("batch_axis", 1))
    time_axis = int(attrs.get("time_axis", 0))
    shape = _shape(x)
    steps, batches = shape[time_axis], shape[batch_axis]
    t = np.arange(steps)[:, None]
    src = np.where(t < lens[None, :], lens[None, :] - 1 - t, t)  # [time, batch]
    if batch_axis < time_axis:
        src = src.T
    view = [1] * len(shape)
    view[time_axis], view[batch_axis] = steps, batches
    index = np.broadcast_to(src.reshape(view), shape).astype(np.int64)
    return relax.op.gather_elements(x, relax.const(index), time_axis)


CONVERTERS: dict[ConverterKey, Converter] = {
    ("", "Swish"): swish,
    ("", "Celu"): celu,
    ("", "LayerNormalization"): layer_normalization,
    ("", "LpNormalization"): lp_normalization,
    ("", "CumProd"): cum_prod,
    ("", "HannWindow"): _window("Hann"),
    ("", "HammingWindow"): _window("Hamming"),
    ("", "BlackmanWindow"): _window("Blackman"),
    ("", "ReverseSequence"): reverse_sequence,
}
