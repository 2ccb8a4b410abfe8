"""Converters TVM 0.27's Relax ONNX frontend lacks or gets wrong, installed through `tvm_hook` (no TVM edits).

Cast group (`pack_cast.py`): float8 Cast/CastLike, BitCast, EyeLike, Split, Upsample, MaxPool Indices, NMS.
Missing in TVM: Swish, Celu, LpNormalization, CumProd, Hann/Hamming/BlackmanWindow, ReverseSequence,
NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss, RNN, GRU, LSTM, and ai.onnx Attention (TVM sends it to
its com.microsoft converter). Wrong or incomplete in TVM: LayerNormalization (Mean/InvStdDev outputs are
placeholders), RMSNormalization (axis 0 fails to compile), Constant (only `value` is read), Pow (mixed
base/exponent types), Dropout (float mask), the reductions over a zero-size dim (TVM returns its accumulator's
start value instead of the identity), ReduceMax/ReduceMin of bool (fails to compile), Mod fmod=0 on floats
(NaN for infinite divisors), IsInf (flags ignored), Mish and Softplus (float32 underflow) and SpaceToDepth mode CRD.
pack_quantseq.py: QLinearMatMul, QLinearConv, ConvInteger (integer-exact like onnxruntime), Unsqueeze with 0-d axes.
Image ops in `pack_image.py`: Resize modes, CenterCropPad, Col2Im, DeformConv, AffineGrid, ConvTranspose output_shape.
pack_misc.py: RotaryEmbedding, TensorScatter, TfIdfVectorizer, Det, MelWeightMatrix, BatchNorm, fp16 MatMul/Softmax, ML.
`converter_pack_fold.py` is the pack's pre-pass for static shapes.

Each converter is checked by the ONNX node tests (`harmonizer-deploy coverage -k OP`, column "TVM + our
pack"; one case per converter in tests/test_converter_pack.py). Converters that need a value known at
import time (window sizes, sequence lengths, nonpad lengths) read it from a constant input, which is how
exported models carry them, and raise a clear error otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.frontend.hook import ConvertContext, Converter, ConverterKey


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
        name = str(getattr(expr, "name_hint", None) or expr.name)  # TVM 0.27's relax.Var has `name` only
        if name in params:
            return params[name][1].numpy()
    raise ValueError(f"{what} must be a constant (an initializer) for this converter, got {type(expr).__name__}")


def _ndim(expr: Any) -> int:
    return int(expr.ty.ndim)


def _shape(expr: Any) -> list[int]:
    return [int(d) for d in expr.ty.shape]


def _builtin(op_type: str, ctx: ConvertContext) -> Any:
    """TVM's own converter for `op_type`, for the cases ours hands back to it."""
    from tvm.relax.frontend.onnx import onnx_frontend

    return onnx_frontend._get_convert_map()[op_type].get_converter(ctx.opset)


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
    lens = np.asarray(_const_value(inputs[1], "ReverseSequence sequence_lens", ctx)).astype(np.int64)
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


def constant(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Constant with any of its value attributes (TVM reads only `value`, and turns strings into [0])."""
    import onnx

    relax = _relax()
    if "value" in attrs:
        value = attrs["value"]
        if isinstance(value, onnx.TensorProto) and value.data_type == onnx.TensorProto.STRING:
            raise ValueError("string Constant: TVM has no string tensors")
        return _builtin("Constant", ctx)(bb, inputs, dict(attrs), ctx.params)
    scalars = {"value_float": np.float32, "value_int": np.int64}
    lists = {"value_floats": np.float32, "value_ints": np.int64}
    for name, np_dt in scalars.items():
        if name in attrs:
            return relax.const(np.asarray(attrs[name], dtype=np_dt), np.dtype(np_dt).name)
    for name, np_dt in lists.items():
        if name in attrs:
            return relax.const(np.asarray(list(attrs[name]), dtype=np_dt), np.dtype(np_dt).name)
    if "value_string" in attrs or "value_strings" in attrs:
        raise ValueError("string Constant: TVM has no string tensors")
    raise ValueError(f"Constant without a supported value attribute (has {sorted(attrs)})")


def _nll(bb: Any, logp: Any, target: Any, weight: Any, attrs: dict) -> Any:
    """Negative log-likelihood of `target` classes (axis 1 of `logp`), weighted, ignore_index, reduced."""
    relax = _relax()
    dt = _dtype(logp)
    classes = _shape(logp)[1]
    t_dt = _dtype(target)
    ignore = attrs.get("ignore_index")
    t_safe = relax.op.clip(target, 0, classes - 1)  # ignored / out-of-range targets pick class 0, weighted 0
    if ignore is not None:
        is_ignored = bb.emit(relax.op.equal(target, relax.const(int(ignore), t_dt)))
        t_safe = relax.op.where(is_ignored, relax.op.zeros_like(target), t_safe)
    t_safe = bb.emit(t_safe)
    picked = relax.op.gather_elements(logp, relax.op.expand_dims(t_safe, 1), axis=1)
    loss = bb.emit(relax.op.negative(relax.op.squeeze(picked, [1])))
    w = None
    if weight is not None:
        w = relax.op.take(weight, t_safe, axis=0)
    if ignore is not None:
        keep = relax.op.where(is_ignored, relax.const(0.0, dt), relax.const(1.0, dt))
        w = keep if w is None else relax.op.multiply(w, keep)
    if w is not None:
        w = bb.emit(w)
        loss = bb.emit(relax.op.multiply(loss, w))
    reduction = attrs.get("reduction", b"mean")
    reduction = reduction.decode() if isinstance(reduction, bytes) else str(reduction)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return relax.op.sum(loss)
    if w is not None:
        return relax.op.divide(relax.op.sum(loss), relax.op.sum(w))
    return relax.op.mean(loss)


def negative_log_likelihood_loss(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """NegativeLogLikelihoodLoss: -input[n, target[n, d...], d...], with weights, ignore_index and reduction."""
    return _nll(bb, inputs[0], inputs[1], _opt(inputs, 2), attrs)


def softmax_cross_entropy_loss(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """SoftmaxCrossEntropyLoss: NLL of log_softmax over axis 1; outputs (loss, log_prob)."""
    relax = _relax()
    x = inputs[0]
    in_dt = _dtype(x)
    dt = "float32" if in_dt in _LOW_PRECISION else in_dt
    xc = bb.emit(relax.op.astype(x, dt)) if dt != in_dt else x
    logp = bb.emit(relax.op.nn.log_softmax(xc, axis=1))
    weight = _opt(inputs, 2)
    if weight is not None and dt != in_dt:
        weight = relax.op.astype(weight, dt)
    loss = _nll(bb, logp, inputs[1], weight, attrs)
    outs = [loss, logp]
    if dt != in_dt:
        outs = [relax.op.astype(o, in_dt) for o in outs]
    return relax.Tuple([bb.emit(o) for o in outs])


def _opt(inputs: list, i: int) -> Any:
    return inputs[i] if len(inputs) > i else None


def _split_heads(bb: Any, x: Any, heads: int) -> Any:
    """[batch, seq, heads * size] -> [batch, heads, seq, size]."""
    relax = _relax()
    b, s, hidden = _shape(x)
    return bb.emit(relax.op.permute_dims(relax.op.reshape(x, [b, s, heads, hidden // heads]), [0, 2, 1, 3]))


def _causal_or_window(q_len: int, kv_len: int, offset: Any, left: int, right: int, causal: bool) -> np.ndarray:
    """Additive bias (0 allowed, -inf masked) of a bottom-right aligned causal mask and/or sliding window.

    `offset` is an int (keys before this query block) or a per-batch array (then the result is [b, 1, q, kv]).
    """
    i = np.arange(q_len).reshape(q_len, 1)
    j = np.arange(kv_len).reshape(1, kv_len)
    per_batch = np.ndim(offset) > 0
    pos = i + (np.reshape(offset, (-1, 1, 1)) if per_batch else int(offset))  # absolute query position
    allowed = np.ones(np.broadcast_shapes(pos.shape, j.shape), dtype=bool)
    if causal:
        allowed &= j <= pos
    if left >= 0:
        allowed &= pos - j <= left
    if right >= 0:
        allowed &= j - pos <= right
    bias = np.where(allowed, 0.0, -np.inf)
    return bias.reshape(bias.shape[0], 1, q_len, kv_len) if per_batch else bias


def attention(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """ai.onnx Attention (opset 23+): Y, present_key, present_value, qk_matmul_output.

    TVM maps every `Attention` node to its com.microsoft converter (see COVERAGE.md); this is the standard op:
    3D or 4D Q/K/V, grouped-query heads, boolean or additive masks (shorter masks padded with -inf), causal
    masking aligned bottom-right, past key/value caches, softcap, scale, softmax precision, the four
    qk_matmul_output modes, nonpad_kv_seqlen (constant) and the opset-25 sliding window. A query row with no
    attendable key gives zeros, as the reference does.
    """
    import onnx

    relax = _relax()
    q, k, v = inputs[0], inputs[1], inputs[2]
    mask, past_k, past_v, nonpad = _opt(inputs, 3), _opt(inputs, 4), _opt(inputs, 5), _opt(inputs, 6)
    out_dt = _dtype(q)
    dt = "float32" if out_dt in _LOW_PRECISION else out_dt  # float16/bfloat16 compute in float32
    if dt != out_dt:
        q, k, v = (bb.emit(relax.op.astype(t, dt)) for t in (q, k, v))
        past_k, past_v = (bb.emit(relax.op.astype(t, dt)) if t is not None else None for t in (past_k, past_v))
        if mask is not None and _dtype(mask) != "bool":
            mask = bb.emit(relax.op.astype(mask, dt))
    three_d = _ndim(q) == 3
    if three_d:
        q_heads, kv_heads = int(attrs["q_num_heads"]), int(attrs["kv_num_heads"])
        q, k, v = _split_heads(bb, q, q_heads), _split_heads(bb, k, kv_heads), _split_heads(bb, v, kv_heads)
    q_heads, kv_heads = _shape(q)[1], _shape(k)[1]
    head_size = _shape(q)[3]
    scale = float(attrs.get("scale", 1.0 / np.sqrt(head_size)))
    root = relax.const(np.sqrt(scale), dt)
    if past_k is not None:
        k = bb.emit(relax.op.concat([past_k, k], axis=2))
        v = bb.emit(relax.op.concat([past_v, v], axis=2))
    present_k, present_v = k, v
    q_len, kv_len = _shape(q)[2], _shape(k)[2]
    batch = _shape(q)[0]

    neg_inf = relax.const(-np.inf, dt)
    bias = None
    if mask is not None:
        if _dtype(mask) == "bool":
            mask = bb.emit(relax.op.where(mask, relax.const(0.0, dt), neg_inf))
        m_shape = _shape(mask)
        if m_shape[-1] < kv_len:
            pad = relax.const(np.full([*m_shape[:-1], kv_len - m_shape[-1]], -np.inf, dtype=dt), dt)
            mask = relax.op.concat([mask, pad], axis=-1)
        bias = bb.emit(mask)
    causal = bool(attrs.get("is_causal", 0))
    left, right = int(attrs.get("left_window_size", -1)), int(attrs.get("right_window_size", -1))
    lens = None
    if nonpad is not None:
        lens = np.asarray(_const_value(nonpad, "Attention nonpad_kv_seqlen", ctx)).astype(np.int64).reshape(-1)
    if causal or left >= 0 or right >= 0:
        offset: Any = (lens - q_len) if (lens is not None and past_k is None) else (
            _shape(past_k)[2] if past_k is not None else 0
        )
        extra = relax.const(_causal_or_window(q_len, kv_len, offset, left, right, causal).astype(dt), dt)
        bias = bb.emit(extra if bias is None else relax.op.add(bias, extra))
    if lens is not None:
        keep = np.arange(kv_len)[None, :] < lens[:, None]
        pad_bias = np.where(keep, 0.0, -np.inf).reshape(batch, 1, 1, kv_len).astype(dt)
        bias = bb.emit(relax.const(pad_bias, dt) if bias is None else relax.op.add(bias, relax.const(pad_bias, dt)))

    if q_heads != kv_heads:
        k = bb.emit(relax.op.repeat(k, q_heads // kv_heads, axis=1))
        v = bb.emit(relax.op.repeat(v, q_heads // kv_heads, axis=1))
    qk = bb.emit(
        relax.op.matmul(relax.op.multiply(q, root), relax.op.permute_dims(relax.op.multiply(k, root), [0, 1, 3, 2]))
    )
    softcap = float(attrs.get("softcap", 0.0))
    if softcap > 0:
        cap = relax.const(softcap, dt)
        qk = bb.emit(relax.op.multiply(relax.op.tanh(relax.op.divide(qk, cap)), cap))
    mode = int(attrs.get("qk_matmul_output_mode", 0))
    scores = bb.emit(relax.op.add(qk, bias)) if bias is not None else qk
    qk_out = scores if mode == 2 else qk
    precision = attrs.get("softmax_precision")
    sm_dt = str(onnx.helper.tensor_dtype_to_np_dtype(int(precision))) if precision else dt
    sm_in = relax.op.astype(scores, sm_dt) if sm_dt != dt else scores
    probs = bb.emit(relax.op.nn.softmax(sm_in, axis=-1))
    if bias is not None:  # rows with no attendable key: zeros, not the NaN of softmax over all -inf
        # (compare against the lowest finite value: TVM's llvm code evaluates -inf == -inf as false)
        lowest = relax.const(np.finfo(dt).min, dt)
        dead = relax.op.less_equal(relax.op.max(bias, axis=-1, keepdims=True), lowest)
        probs = bb.emit(relax.op.where(dead, relax.const(0.0, sm_dt), probs))
    if sm_dt != dt:
        probs = bb.emit(relax.op.astype(probs, dt))
    if mode == 3:
        qk_out = probs
    y = relax.op.matmul(probs, v)
    if three_d:
        y = relax.op.reshape(relax.op.permute_dims(y, [0, 2, 1, 3]), [batch, q_len, q_heads * _shape(v)[3]])
    outs = [y, present_k, present_v, qk_out]
    if dt != out_dt:
        outs = [relax.op.astype(o, out_dt) for o in outs]
    return relax.Tuple([bb.emit(o) for o in outs])


def rms_normalization(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """RMSNormalization: x / sqrt(mean(x^2 over axes axis..-1) + epsilon) * scale (TVM's fails to compile axis=0)."""
    relax = _relax()
    x, scale = inputs[0], inputs[1]
    ndim = _ndim(x)
    axis = int(attrs.get("axis", -1))
    axis = axis + ndim if axis < 0 else axis
    eps = float(attrs.get("epsilon", 1e-5))
    in_dt = _dtype(x)
    calc_dt = "float32" if int(attrs.get("stash_type", 1)) == 1 else in_dt
    xc = relax.op.astype(x, calc_dt) if calc_dt != in_dt else x
    ms = relax.op.mean(relax.op.multiply(xc, xc), list(range(axis, ndim)), keepdims=True)
    normalized = relax.op.multiply(xc, relax.op.rsqrt(relax.op.add(ms, relax.const(eps, calc_dt))))
    if calc_dt != in_dt:
        normalized = relax.op.astype(normalized, in_dt)
    return relax.op.multiply(normalized, scale)


def power(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Pow with different base and exponent types (the result has the base's type); same types go to TVM."""
    relax = _relax()
    x, y = inputs[0], inputs[1]
    x_dt, y_dt = _dtype(x), _dtype(y)
    if x_dt == y_dt:
        return _builtin("Pow", ctx)(bb, inputs, attrs, ctx.params)
    if x_dt.startswith(("float", "bfloat")):
        return relax.op.power(x, relax.op.astype(y, x_dt))
    wide = "float64"
    return relax.op.astype(relax.op.power(relax.op.astype(x, wide), relax.op.astype(y, wide)), x_dt)


def dropout(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Dropout when it is the identity (inference, or ratio 0): Y = X and a boolean all-true mask.

    TVM returns the mask as float. Training mode with a non-zero ratio is random and goes to TVM's converter.
    """
    relax = _relax()
    x = inputs[0]
    ratio_in, training_in = _opt(inputs, 1), _opt(inputs, 2)
    training = False
    if training_in is not None:
        training = bool(np.asarray(_const_value(training_in, "Dropout training_mode", ctx)).reshape(-1)[0])
    ratio = float(attrs.get("ratio", 0.5))
    if ratio_in is not None:
        ratio = float(np.asarray(_const_value(ratio_in, "Dropout ratio", ctx)).reshape(-1)[0])
    if training and ratio != 0.0:
        return _builtin("Dropout", ctx)(bb, inputs, attrs, ctx.params)
    mask = relax.op.ones(_shape(x), "bool")
    return relax.Tuple([x, bb.emit(mask)])


# ------------------------------------------------------------------------- reductions over nothing

# What each reduction gives over an empty set (ONNX: the identity of the reduction; log(0) = -inf).
_EMPTY_REDUCTION = {
    "ReduceSum": 0.0,
    "ReduceSumSquare": 0.0,
    "ReduceL1": 0.0,
    "ReduceL2": 0.0,
    "ReduceProd": 1.0,
    "ReduceLogSum": -np.inf,
    "ReduceLogSumExp": -np.inf,
    "ReduceMax": -np.inf,
    "ReduceMin": np.inf,
}


def _static_dims(expr: Any) -> list[int | None]:
    """The input's dims, None for a symbolic one."""
    import tvm

    return [int(d) if isinstance(d, tvm.tirx.IntImm) else None for d in expr.ty.shape]


def _onnx_tensor_type(name: str, graph: Any) -> tuple[list[int | None] | None, int]:
    """(dims, elem_type) of a tensor as the ONNX graph declares it (a 0 dim is a real 0 here).

    Why: TVM's importer reads dim_value 0 as unknown and makes it a symbolic dim, so the converter itself
    cannot see a zero-size dim; the node is picked here (`applies_to`) from the ONNX declaration instead.
    """
    for t in graph.initializer:
        if t.name == name:
            return list(t.dims), t.data_type
    for vi in [*graph.input, *graph.value_info, *_inferred(graph)]:
        if vi.name == name and vi.type.HasField("tensor_type"):
            tt = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] if tt.HasField(
                "shape") else None
            return dims, tt.elem_type
    return None, 0


_INFERRED: list[tuple[Any, list]] = []  # (graph, its inferred value_info): the last graph asked about


def _inferred(graph: Any) -> list:
    """value_info from ONNX shape inference of `graph` as exported (best effort, cached for the graph being
    imported; the hook's renamed op types are restored first, see `hook.as_exported`).

    Why: the tracker's static models declare only graph inputs/outputs, so an intermediate tensor's zero-size
    dim (a `_expanded` reduction) is only known after inference; compile's prepare step infers shapes already.
    """
    import onnx

    from harmonizer_deploy.frontend.hook import as_exported

    if _INFERRED and _INFERRED[0][0] is graph:
        return _INFERRED[0][1]
    try:
        latest = onnx.helper.make_opsetid("", onnx.defs.onnx_opset_version())
        model = onnx.helper.make_model(as_exported(graph), opset_imports=[latest])
        found = list(onnx.shape_inference.infer_shapes(model, strict_mode=False).graph.value_info)
    except Exception:  # inference cannot follow this graph: no extra facts
        found = []
    _INFERRED[:] = [(graph, found)]
    return found


def _onnx_array(name: str, graph: Any) -> np.ndarray | None:
    """The value of an initializer or Constant-node output of the ONNX graph, else None (what `applies_to`
    predicates read: the hook has already renamed earlier Constant nodes for the pack's own converter)."""
    import onnx
    from onnx import numpy_helper

    from harmonizer_deploy.frontend.hook import mangled_name

    if not name:
        return None
    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    constant_ops = ("Constant", mangled_name("", "Constant"))
    for n in graph.node:
        if n.op_type in constant_ops and n.output and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
                if a.name in ("value_int", "value_ints"):
                    return np.array(onnx.helper.get_attribute_value(a), np.int64)
                if a.name in ("value_float", "value_floats"):
                    return np.array(onnx.helper.get_attribute_value(a), np.float32)
    return None


def _onnx_const_ints(name: str, graph: Any) -> list[int] | None:
    value = _onnx_array(name, graph)
    return None if value is None else [int(v) for v in value.reshape(-1)]


def _reduced_axes(node: Any, graph: Any, rank: int) -> list[int] | None:
    """The axes a reduction node reduces (sorted, non-negative); None when they are not known statically."""
    attrs = {a.name: a for a in node.attribute}
    if len(node.input) > 1 and node.input[1]:
        axes = _onnx_const_ints(node.input[1], graph)
        if axes is None:
            return None
    else:
        axes = list(attrs["axes"].ints) if "axes" in attrs else []
    if not axes and "noop_with_empty_axes" in attrs and attrs["noop_with_empty_axes"].i:
        return []
    return sorted({a % rank for a in axes}) if axes else list(range(rank))


def _reduction_applies(op_type: str) -> Callable[[Any, Any], bool]:
    """Take over a reduction whose reduced dims include a 0 (as the ONNX graph declares or infers them)."""

    def applies(node: Any, graph: Any) -> bool:
        dims, _elem_type = _onnx_tensor_type(node.input[0], graph)
        if dims is None:
            return False
        axes = _reduced_axes(node, graph, len(dims))
        if axes is None or not axes:
            return False
        return any(dims[a] == 0 for a in axes)

    return applies


def _reduce_over_empty(op_type: str) -> Converter:
    """A reduction whose reduced dims include one of size 0: a constant of the reduction's identity.

    TVM reduces over the empty dim anyway and returns whatever its accumulator starts from (garbage for
    sums: 1.4e25). Only the nodes `applies_to` picks come here.
    """

    def convert(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
        relax = _relax()
        x, axes_in = inputs[0], _opt(inputs, 1)
        dims = _static_dims(x)
        rank = len(dims)
        if axes_in is not None:
            axes = [int(a) for a in np.asarray(_const_value(axes_in, f"{op_type} axes", ctx)).reshape(-1)]
        else:
            axes = [int(a) for a in attrs.get("axes", [])]
        reduced = sorted({a % rank for a in axes}) if axes else list(range(rank))
        keep = int(attrs.get("keepdims", 1))
        dtype = _dtype(x)
        # applies_to picked this node for a zero-size reduced dim; TVM's importer turns a 0 dim into a symbolic one
        shape = [1 if i in reduced else d for i, d in enumerate(x.ty.shape)] if keep else [
            d for i, d in enumerate(x.ty.shape) if i not in reduced]
        value = _EMPTY_REDUCTION[op_type]
        if dtype == "bool":  # max/min over no booleans: False / True
            value = value > 0
        elif not dtype.startswith(("float", "bfloat")) and not np.isfinite(value):
            info = np.iinfo(np.dtype(dtype))
            value = info.max if value > 0 else info.min
        np_dtype = np.float32 if dtype == "bfloat16" else np.dtype(dtype)
        static = [int(d) if isinstance(d, int) else None for d in (
            [1 if i in reduced else dims[i] for i in range(rank)] if keep else
            [dims[i] for i in range(rank) if i not in reduced])]
        if all(d is not None for d in static):  # a constant tensor (relax.op.full cannot take an infinite fill)
            return relax.const(np.full(static, value, dtype=np_dtype), dtype)
        return relax.op.astype(relax.op.full(shape, relax.const(np.array(value, dtype=np_dtype)), np_dtype.name),
                               dtype)

    convert.applies_to = _reduction_applies(op_type)  # type: ignore[attr-defined]
    return convert



def _reduce_extreme(op_type: str) -> Converter:
    """ReduceMax / ReduceMin that give -inf / +inf over all -inf / +inf values or an empty set, and take bool.

    TVM starts max at the lowest finite float, so max(-inf, -inf) is -3.4e38 (then x - max is -inf, not NaN,
    and the masked-row guards of attention-like graphs see no infinity), and cannot compile bool max/min.
    Here: bool as any/all through int8; floats fixed up where no element is above -inf (below +inf).
    """

    def convert(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
        relax = _relax()
        op = relax.op
        x, axes_in = inputs[0], _opt(inputs, 1)
        dtype = _dtype(x)
        if axes_in is not None:
            try:
                axes = [int(a) for a in np.asarray(_const_value(axes_in, f"{op_type} axes", ctx)).reshape(-1)]
            except ValueError:
                return _builtin(op_type, ctx)(bb, inputs, attrs, ctx.params)
        else:
            axes = [int(a) for a in attrs.get("axes", [])]
        if (not axes and int(attrs.get("noop_with_empty_axes", 0))) or not (dtype == "bool" or _is_float(dtype)):
            return _builtin(op_type, ctx)(bb, inputs, attrs, ctx.params)
        rank = _ndim(x)
        reduced = sorted({a % rank for a in axes}) if axes else list(range(rank))
        keep = bool(int(attrs.get("keepdims", 1)))
        is_max = op_type == "ReduceMax"
        reduce = op.max if is_max else op.min
        if int(attrs.get(_EMPTY_MARK, 0)):  # a zero-size reduced dim (TVM returns uninitialized memory there)
            return _reduce_over_empty(op_type)(bb, inputs, attrs, ctx)
        if dtype == "bool":  # any / all
            return op.greater(reduce(op.astype(x, "int8"), reduced, keep), relax.const(0, "int8"))
        y = bb.emit(reduce(x, reduced, keep))
        # the checks in float32 for half types (TVM has no bfloat16 isnan; the cast is exact)
        xc = op.astype(x, "float32") if dtype in _LOW_PRECISION else x
        cdt = "float32" if dtype in _LOW_PRECISION else dtype
        inf = relax.const(-np.inf if is_max else np.inf, cdt)
        beyond = op.greater(xc, inf) if is_max else op.less(xc, inf)  # finite or the other infinity (NaN: no)
        some = op.greater(op.max(op.astype(beyond, "int8"), reduced, keep), relax.const(0, "int8"))
        nan = op.greater(op.max(op.astype(op.isnan(xc), "int8"), reduced, keep), relax.const(0, "int8"))
        return op.where(op.logical_or(some, nan), y, op.astype(inf, dtype) if cdt != dtype else inf)

    def applies(node: Any, graph: Any) -> bool:
        """Every node; one with a zero-size reduced dim is marked for the converter (TVM hides the 0 from it)."""
        import onnx

        if _reduction_applies(op_type)(node, graph):
            node.attribute.append(onnx.helper.make_attribute(_EMPTY_MARK, 1))
        return True

    convert.applies_to = applies  # type: ignore[attr-defined]
    return convert


_EMPTY_MARK = "harmonizer_reduces_empty_set"  # set on the hook's private renamed copy of the node only


# ------------------------------------------------------------------------ elementwise and layout fixes


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def mod(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Mod with fmod=0 on floats: the result takes the divisor's sign (Python's %), inf and NaN as numpy.

    TVM uses floor_mod, x - floor(x / y) * y, which is NaN for an infinite divisor and -0/+0 mixed up. Here:
    r = fmod(x, y), then r + y where r is non-zero and its sign differs from y's (fmod(x, ±inf) is x).
    Integer Mod and fmod=1 go to TVM's converter.
    """
    relax = _relax()
    x, y = inputs[0], inputs[1]
    dtype = _dtype(x)
    if int(attrs.get("fmod", 0)) or not _is_float(dtype):
        return _builtin("Mod", ctx)(bb, inputs, attrs, ctx.params)
    op = relax.op
    zero = relax.const(0.0, dtype)
    ax, ay = op.abs(x), op.abs(y)
    # fmod by |y| on |x|, sign of x: finite y uses trunc division; y = ±inf leaves x; y = 0 or x = ±inf is NaN
    trunc = op.subtract(ax, op.multiply(op.floor(op.divide(ax, ay)), ay))
    r = bb.emit(op.where(op.isinf(ay), ax, trunc))
    r = bb.emit(op.where(op.less(x, zero), op.negative(r), r))
    flip = op.logical_and(op.not_equal(r, zero), op.logical_xor(op.less(r, zero), op.less(y, zero)))
    return op.where(flip, op.add(r, y), r)


def is_inf(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """IsInf honouring detect_positive / detect_negative (TVM ignores both and reports every infinity)."""
    relax = _relax()
    x = inputs[0]
    inf = relax.op.isinf(x)
    pos, neg = int(attrs.get("detect_positive", 1)), int(attrs.get("detect_negative", 1))
    if pos and neg:
        return inf
    zero = relax.const(0.0, _dtype(x))
    if pos:
        return relax.op.logical_and(inf, relax.op.greater(x, zero))
    if neg:
        return relax.op.logical_and(inf, relax.op.less(x, zero))
    return relax.op.zeros(_shape(x), "bool")


def _softplus(x: Any) -> Any:
    """log(1 + exp(x)) without float underflow: max(x, 0) + log1p(exp(-|x|)), log1p(t) ≈ t - t²/2 for tiny t.

    TVM computes log(1 + exp(x)), which is 0 once exp(x) drops below float32's epsilon (x < -17). Stays in
    the input's float type (no float64: WebGPU has none); float16/bfloat16 go through float32.
    """
    relax = _relax()
    op = relax.op
    dtype = _dtype(x)
    calc = "float32" if dtype in _LOW_PRECISION else dtype
    xc = op.astype(x, calc) if calc != dtype else x
    t = op.exp(op.negative(op.abs(xc)))
    small = op.less(t, relax.const(1e-4, calc))
    log1p = op.where(small, op.subtract(t, op.multiply(relax.const(0.5, calc), op.multiply(t, t))),
                     op.log(op.add(relax.const(1.0, calc), t)))
    return op.maximum(xc, relax.const(0.0, calc)), log1p, calc


def mish(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Mish, x * tanh(softplus(x)), with the underflow-free softplus below."""
    relax = _relax()
    x = inputs[0]
    pos, log1p, calc = _softplus(x)
    xc = relax.op.astype(x, calc) if calc != _dtype(x) else x
    y = relax.op.multiply(xc, relax.op.tanh(relax.op.add(pos, log1p)))
    return relax.op.astype(y, _dtype(x)) if calc != _dtype(x) else y


def softplus(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Softplus without float32 underflow (TVM's is 0 for x < -17, so Mish's expansion is 0 there)."""
    relax = _relax()
    x = inputs[0]
    pos, log1p, calc = _softplus(x)
    y = relax.op.add(pos, log1p)
    return relax.op.astype(y, _dtype(x)) if calc != _dtype(x) else y


def space_to_depth(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """SpaceToDepth in CRD mode (opset 28): channel-major blocks; TVM always lays the blocks out as DCR."""
    relax = _relax()
    x = inputs[0]
    block = int(attrs["blocksize"])
    n, c, h, w = x.ty.shape
    y = relax.op.reshape(x, (n, c, h // block, block, w // block, block))
    y = relax.op.permute_dims(y, [0, 1, 3, 5, 2, 4])
    return relax.op.reshape(y, (n, c * block * block, h // block, w // block))


def _crd_mode(node: Any, graph: Any) -> bool:
    attrs = {a.name: a for a in node.attribute}
    return "mode" in attrs and attrs["mode"].s == b"CRD"


space_to_depth.applies_to = _crd_mode  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------- RNN, GRU, LSTM


def _act(name: str, alpha: float | None, beta: float | None) -> Any:
    """One of ONNX's recurrent activation functions as a relax expression builder."""
    relax = _relax()
    op = relax.op

    def c(v: float, x: Any) -> Any:
        return relax.const(v, _dtype(x))

    table = {
        "sigmoid": lambda x: op.sigmoid(x),
        "tanh": lambda x: op.tanh(x),
        "relu": lambda x: op.nn.relu(x),
        "leakyrelu": lambda x: op.nn.leakyrelu(x, 0.01 if alpha is None else alpha),
        "thresholdedrelu": lambda x: op.where(op.greater(x, c(1.0 if alpha is None else alpha, x)), x, c(0.0, x)),
        "affine": lambda x: op.add(op.multiply(x, c(1.0 if alpha is None else alpha, x)), c(beta or 0.0, x)),
        "scaledtanh": lambda x: op.multiply(
            c(1.0 if alpha is None else alpha, x), op.tanh(op.multiply(x, c(1.0 if beta is None else beta, x)))
        ),
        "hardsigmoid": lambda x: op.clip(
            op.add(op.multiply(x, c(0.2 if alpha is None else alpha, x)), c(0.5 if beta is None else beta, x)), 0, 1
        ),
        "elu": lambda x: op.where(
            op.greater_equal(x, c(0.0, x)),
            x,
            op.multiply(c(1.0 if alpha is None else alpha, x), op.subtract(op.exp(x), c(1.0, x))),
        ),
        "softsign": lambda x: op.divide(x, op.add(op.abs(x), c(1.0, x))),
        "softplus": lambda x: op.log(op.add(op.exp(x), c(1.0, x))),
    }
    key = name.lower()
    if key not in table:
        raise ValueError(f"recurrent activation {name!r} is not supported")
    return table[key]


def _take(bb: Any, x: Any, axis: int, index: int) -> Any:
    """x[index] along `axis`, that axis removed."""
    relax = _relax()
    return bb.emit(relax.op.squeeze(relax.op.strided_slice(x, [axis], [index], [index + 1]), [axis]))


def _cols(x: Any, index: int, size: int) -> Any:
    """Gate `index` of a [..., gates * size] tensor."""
    return _relax().op.strided_slice(x, [_ndim(x) - 1], [index * size], [(index + 1) * size])


def _sequence_length(x: Any) -> int:
    """The static sequence length of a [seq, batch, input] tensor: the recurrence is unrolled over it."""
    import tvm

    dim = x.ty.shape[0] if getattr(x.ty, "shape", None) is not None else None
    if not isinstance(dim, tvm.tirx.IntImm):
        raise HarmonizerError(
            "TVM has no RNN/GRU/LSTM/Loop converter of its own; the unrolled recurrence needs a fixed time length",
            "compile with --fix-dim time=N (and verify with --time N)",
        )
    return int(dim)


def _recurrent(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext, kind: str) -> Any:
    """RNN / GRU / LSTM unrolled over a static sequence length, per direction; sequence_lens must be constant."""
    relax = _relax()
    op = relax.op
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[kind]
    x, w, r = inputs[0], inputs[1], inputs[2]
    b, lens_in, h0 = _opt(inputs, 3), _opt(inputs, 4), _opt(inputs, 5)
    c0, peep = (_opt(inputs, 6), _opt(inputs, 7)) if kind == "LSTM" else (None, None)
    layout = int(attrs.get("layout", 0))
    if layout == 1:  # [batch, seq, ...] -> [seq, batch, ...]
        x = bb.emit(op.permute_dims(x, [1, 0, 2]))
        h0 = bb.emit(op.permute_dims(h0, [1, 0, 2])) if h0 is not None else None
        c0 = bb.emit(op.permute_dims(c0, [1, 0, 2])) if c0 is not None else None
    seq, batch = _sequence_length(x), x.ty.shape[1]  # batch may stay symbolic
    hidden = int(attrs.get("hidden_size", _shape(r)[-1]))
    dt = _dtype(x)
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else str(direction)
    dirs = 2 if direction == "bidirectional" else 1
    clip = attrs.get("clip")
    names = [a.decode() if isinstance(a, bytes) else str(a) for a in attrs.get("activations", ())]
    default = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}[kind]
    per_dir = len(default)
    if not names:
        names = default * dirs
    elif len(names) == per_dir and dirs == 2:
        names = names * 2
    alphas = list(attrs.get("activation_alpha", ()))
    betas = list(attrs.get("activation_beta", ()))
    acts = [
        _act(n, alphas[i] if i < len(alphas) else None, betas[i] if i < len(betas) else None)
        for i, n in enumerate(names)
    ]
    lens = None
    if lens_in is not None:
        lens = np.asarray(_const_value(lens_in, f"{kind} sequence_lens", ctx)).astype(np.int64).reshape(-1)
        if (lens >= seq).all():
            lens = None
    if lens is not None and direction != "forward":
        raise ValueError(f"{kind} with sequence_lens shorter than the sequence is supported only forward")

    def gate_pre(v: Any) -> Any:
        if clip is not None:
            return op.clip(v, -float(clip), float(clip))
        return v

    ys, hs, cs = [], [], []
    for d in range(dirs):
        f_act, g_act, h_act = [*acts[d * per_dir : (d + 1) * per_dir], None, None][:3]
        wd, rd = _take(bb, w, 0, d), _take(bb, r, 0, d)
        xw = bb.emit(op.matmul(x, op.permute_dims(wd, [1, 0])))  # [seq, batch, gates*hidden]
        if b is not None:
            bd = _take(bb, b, 0, d)
            wb, rb = _cols(bd, 0, gates * hidden), _cols(bd, 1, gates * hidden)
        else:
            wb = rb = relax.const(np.zeros(gates * hidden, dtype=dt), dt)
        xw = bb.emit(op.add(xw, wb))
        rb = bb.emit(rb)
        zeros = bb.emit(op.zeros(relax.ShapeExpr([batch, hidden]), dt))
        h = _take(bb, h0, 0, d) if h0 is not None else zeros
        cstate = _take(bb, c0, 0, d) if c0 is not None else zeros
        pd = _take(bb, peep, 0, d) if peep is not None else None
        steps = range(seq - 1, -1, -1) if (direction == "reverse" or d == 1) else range(seq)
        outs: dict[int, Any] = {}
        for t in steps:
            xt = _take(bb, xw, 0, t)
            if kind == "RNN":
                new_h = f_act(gate_pre(op.add(op.add(xt, op.matmul(h, op.permute_dims(rd, [1, 0]))), rb)))
                new_c = None
            elif kind == "GRU":
                rz, rr, rh = (op.strided_slice(rd, [0], [i * hidden], [(i + 1) * hidden]) for i in range(3))
                z = f_act(gate_pre(op.add(op.add(_cols(xt, 0, hidden), op.matmul(h, op.permute_dims(rz, [1, 0]))),
                                          _cols(rb, 0, hidden))))
                rg = bb.emit(f_act(gate_pre(op.add(
                    op.add(_cols(xt, 1, hidden), op.matmul(h, op.permute_dims(rr, [1, 0]))), _cols(rb, 1, hidden)
                ))))
                if int(attrs.get("linear_before_reset", 0)):
                    rec = op.multiply(rg, op.add(op.matmul(h, op.permute_dims(rh, [1, 0])), _cols(rb, 2, hidden)))
                else:
                    rec = op.add(op.matmul(op.multiply(rg, h), op.permute_dims(rh, [1, 0])), _cols(rb, 2, hidden))
                cand = g_act(gate_pre(op.add(_cols(xt, 2, hidden), rec)))
                z = bb.emit(z)
                new_h = op.add(op.multiply(op.subtract(relax.const(1.0, dt), z), cand), op.multiply(z, h))
                new_c = None
            else:
                pre = bb.emit(op.add(op.add(xt, op.matmul(h, op.permute_dims(rd, [1, 0]))), rb))
                pi, po, pf = (_cols(pd, i, hidden) for i in range(3)) if pd is not None else (None, None, None)
                ig, og, fg, cg = (_cols(pre, i, hidden) for i in range(4))
                if pd is not None:
                    ig, fg = op.add(ig, op.multiply(pi, cstate)), op.add(fg, op.multiply(pf, cstate))
                i_t, f_t = f_act(gate_pre(ig)), f_act(gate_pre(fg))
                if int(attrs.get("input_forget", 0)):
                    f_t = op.subtract(relax.const(1.0, dt), i_t)
                new_c = bb.emit(op.add(op.multiply(f_t, cstate), op.multiply(i_t, g_act(gate_pre(cg)))))
                if pd is not None:
                    og = op.add(og, op.multiply(po, new_c))
                new_h = op.multiply(f_act(gate_pre(og)), h_act(new_c))
            new_h = bb.emit(new_h)
            if lens is not None:
                live = relax.const((t < lens).reshape(-1, 1))
                outs[t] = bb.emit(op.where(live, new_h, zeros))
                h = bb.emit(op.where(live, new_h, h))
                if new_c is not None:
                    cstate = bb.emit(op.where(live, new_c, cstate))
            else:
                outs[t], h = new_h, new_h
                if new_c is not None:
                    cstate = new_c
        ys.append(bb.emit(op.stack([outs[t] for t in range(seq)], axis=0)))  # [seq, batch, hidden]
        hs.append(h)
        cs.append(cstate)
    y = bb.emit(op.stack(ys, axis=1))  # [seq, dirs, batch, hidden]
    y_h = bb.emit(op.stack(hs, axis=0))  # [dirs, batch, hidden]
    y_c = bb.emit(op.stack(cs, axis=0))
    if layout == 1:
        y = bb.emit(op.permute_dims(y, [2, 0, 1, 3]))
        y_h = bb.emit(op.permute_dims(y_h, [1, 0, 2]))
        y_c = bb.emit(op.permute_dims(y_c, [1, 0, 2]))
    return relax.Tuple([y, y_h, y_c] if kind == "LSTM" else [y, y_h])


def rnn(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """RNN (Elman): H = f(X W^T + H R^T + Wb + Rb)."""
    return _recurrent(bb, inputs, attrs, ctx, "RNN")


def gru(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """GRU with gates z, r, h and linear_before_reset."""
    return _recurrent(bb, inputs, attrs, ctx, "GRU")


def lstm(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """LSTM with gates i, o, f, c, peepholes, input_forget and clip."""
    return _recurrent(bb, inputs, attrs, ctx, "LSTM")


# The op-group modules: each has its own CONVERTERS (and tests in tests/frontend/test_pack_<group>.py). Imported
# here, after the helpers they use are defined.
from harmonizer_deploy.frontend import pack_cast, pack_image, pack_misc, pack_quantseq  # noqa: E402

SUB_PACKS: dict[ConverterKey, Converter] = {
    **pack_cast.CONVERTERS, **pack_quantseq.CONVERTERS, **pack_image.CONVERTERS, **pack_misc.CONVERTERS,
}

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
    ("", "Attention"): attention,
    ("", "Constant"): constant,
    ("", "NegativeLogLikelihoodLoss"): negative_log_likelihood_loss,
    ("", "SoftmaxCrossEntropyLoss"): softmax_cross_entropy_loss,
    ("", "RNN"): rnn,
    ("", "GRU"): gru,
    ("", "LSTM"): lstm,
    ("", "RMSNormalization"): rms_normalization,
    ("", "Pow"): power,
    ("", "Dropout"): dropout,
    **{("", op): _reduce_over_empty(op) for op in _EMPTY_REDUCTION if op not in ("ReduceMax", "ReduceMin")},
    ("", "ReduceMax"): _reduce_extreme("ReduceMax"),
    ("", "ReduceMin"): _reduce_extreme("ReduceMin"),
    ("", "Mod"): mod,
    ("", "IsInf"): is_inf,
    ("", "Mish"): mish,
    ("", "Softplus"): softplus,
    ("", "SpaceToDepth"): space_to_depth,
    **SUB_PACKS,
}
