"""Converters of the cast group: Cast/CastLike to and from float8, BitCast, and the node cases TVM 0.27 gets
wrong around them.

Why float8 needs its own Cast: TVM's float8 conversions are not ONNX's. Encoding to the FNUZ types uses the FN
exponent bias (every value comes out halved), and decoding ignores NaN codes and subnormals (FN 0x00 reads as
2**-7, 0x7F as 480). Here both directions are built from integer and comparison ops that TVM compiles exactly:
decoding gathers from a 256-entry table of the type's values by the input's bits, encoding counts the rounding
midpoints below |x| (round to nearest, ties to even, as ONNX and ml_dtypes do) and assembles the bits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harmonizer_deploy.frontend.hook import ConvertContext, Converter, ConverterKey, untyped_input
from harmonizer_deploy.frontend.pack import (
    _builtin,
    _const_value,
    _dtype,
    _ndim,
    _onnx_const_ints,
    _onnx_tensor_type,
    _relax,
    _shape,
)

# TensorProto element types of the float8 types TVM can hold, and TVM's dtype names for them.
_FLOAT8 = {17: "float8_e4m3fn", 18: "float8_e4m3fnuz", 19: "float8_e5m2", 20: "float8_e5m2fnuz"}


def _np_float8(name: str) -> np.dtype:
    import onnx

    code = next(t for t, n in _FLOAT8.items() if n == name)
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(code))


def _type_name(elem_type: int) -> str:
    import onnx

    return _FLOAT8.get(elem_type) or np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def _reinterpret(bb: Any, x: Any, dtype: str) -> Any:
    """The same bits read as `dtype` (same element width)."""
    from tvm import topi

    return bb.emit_te(topi.reinterpret, x, dtype)


def _static_shape(x: Any, what: str) -> list[int]:
    """The input's dims; a clear import error when one is symbolic (`compile --fix-dim` makes it static)."""
    try:
        return _shape(x)
    except TypeError as exc:
        raise ValueError(f"{what} needs a static input shape, got {list(x.ty.shape)}") from exc


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def _decode_float8(bb: Any, x: Any, target: str, saturate: bool) -> Any:
    """float8 `x` cast to `target`: the exact value of each code (a gather by the input's bits), then a cast."""
    relax = _relax()
    src = _dtype(x)
    table = np.arange(256, dtype=np.uint8).view(_np_float8(src)).astype(np.float32)  # exact: float32 holds all
    bits = relax.op.astype(_reinterpret(bb, x, "uint8"), "int32")
    y = bb.emit(relax.op.take(relax.const(table), bits, axis=0))
    if target in _FLOAT8.values():
        return _encode_float8(bb, y, target, saturate)
    if target == "bool":
        return relax.op.not_equal(y, relax.const(0.0, "float32"))
    return relax.op.astype(y, target)


def _codes(name: str) -> tuple[np.ndarray, int, int]:
    """(magnitudes of the non-negative finite codes 0..K-1 in order, overflow code, NaN code) of a float8 type."""
    values = np.arange(256, dtype=np.uint8).view(_np_float8(name)).astype(np.float64)
    finite = np.isfinite(values[:128])
    count = int(np.argmin(finite)) if not finite.all() else 128
    nan_code = int(np.flatnonzero(np.isnan(values))[0])
    over = int(np.flatnonzero(np.isinf(values[:128]))[0]) if np.isinf(values[:128]).any() else nan_code
    return values[:count], over, nan_code


def _encode_float8(bb: Any, x: Any, target: str, saturate: bool) -> Any:
    """`x` (float or integer) cast to float8 `target` the ONNX way.

    saturate=1 clamps to the largest finite value (infinities too); saturate=0 sends what rounds past it to
    +-inf (e5m2) or NaN (the others). NaN stays NaN; FNUZ types have no negative zero.
    """
    relax = _relax()
    src = _dtype(x)
    # 16-bit floats widen to float32 exactly; an integer past 2**24 that float32 rounds is far beyond float8's
    # range either way; float64 stays float64 (rounding it to float32 first could move it onto a midpoint).
    calc = "float64" if src == "float64" else "float32"
    if src != calc:
        x = bb.emit(relax.op.astype(x, calc))
    mags, over_code, nan_code = _codes(target)
    top = float(mags[-1])
    upper = np.append(mags[1:], top + (mags[-1] - mags[-2]))  # the code above each one (the last: overflow)
    mids = (mags + upper) / 2.0  # exact in float32: float8 values have at most 4 significant bits
    even_upper = (np.arange(1, len(mags) + 1) % 2 == 0)  # a tie rounds up when the code above is even
    mag = relax.op.abs(x)
    if saturate:
        mag = relax.op.minimum(mag, relax.const(top, calc))
    mag = bb.emit(relax.op.expand_dims(mag, -1))
    above = relax.op.greater(mag, relax.const(mids.astype(calc)))
    tie = relax.op.logical_and(relax.op.equal(mag, relax.const(mids.astype(calc))), relax.const(even_upper))
    code = bb.emit(relax.op.sum(relax.op.astype(relax.op.logical_or(above, tie), "int32"), axis=-1))
    code = bb.emit(relax.op.where(relax.op.greater_equal(code, relax.const(len(mags), "int32")),
                                  relax.const(over_code, "int32"), code))
    int_type = "int64" if calc == "float64" else "int32"
    negative = relax.op.less(_reinterpret(bb, x, int_type), relax.const(0, int_type))  # -0.0 included
    if target.endswith("fnuz"):  # no negative zero: a sign bit on code 0 would be the NaN code
        negative = relax.op.logical_and(negative, relax.op.not_equal(code, relax.const(0, "int32")))
    signed = relax.op.where(negative, relax.op.add(code, relax.const(128, "int32")), code)
    if over_code == nan_code:  # overflow is NaN: no sign on it (FNUZ: 0x80 is the NaN code itself)
        signed = relax.op.where(relax.op.equal(code, relax.const(nan_code, "int32")), code, signed)
    bits = relax.op.where(relax.op.isnan(x), relax.const(nan_code, "int32"), signed)
    return _reinterpret(bb, bb.emit(relax.op.astype(bits, "uint8")), target)


_E8M0 = 24  # TensorProto FLOAT8E8M0: a power of two (exponent bits only); TVM's cast rounds it differently


def _encode_e8m0(bb: Any, x: Any, saturate: bool, round_mode: str) -> Any:
    """`x` cast to float8_e8m0fnu: float32's exponent field, rounded per `round_mode` ("up" by default).

    NaN and infinities become 0xFF (NaN); saturate keeps a round-up from 2**127 from overflowing to it.
    """
    relax = _relax()
    op = relax.op
    if _dtype(x) != "float32":
        x = bb.emit(op.astype(x, "float32"))
    bits = _reinterpret(bb, x, "int32")

    def mask(m: int) -> Any:
        return op.not_equal(op.bitwise_and(bits, relax.const(m, "int32")), relax.const(0, "int32"))

    exponent = bb.emit(op.bitwise_and(op.right_shift(bits, relax.const(23, "int32")), relax.const(0xFF, "int32")))
    special = op.equal(exponent, relax.const(0xFF, "int32"))
    if round_mode == "nearest":  # guard bit set and (round or sticky bits, or a nonzero exponent)
        rest = op.logical_or(op.logical_or(mask(0x200000), mask(0x1FFFFF)),
                             op.greater(exponent, relax.const(0, "int32")))
        up = op.logical_and(mask(0x400000), rest)
    elif round_mode == "up":
        up = mask(0x7FFFFF)
    elif round_mode == "down":
        up = relax.const(False, "bool")
    else:
        raise ValueError(f"Cast round_mode {round_mode!r}: ONNX allows up, down, nearest")
    up = op.logical_and(up, op.logical_not(special))
    if saturate:
        up = op.logical_and(up, op.not_equal(exponent, relax.const(0xFE, "int32")))
    rounded = op.add(exponent, op.astype(up, "int32"))
    code = op.where(special, relax.const(0xFF, "int32"), rounded)
    return _reinterpret(bb, bb.emit(op.astype(code, "uint8")), "float8_e8m0fnu")


def _convert_type(bb: Any, x: Any, target: str, saturate: bool, round_mode: str = "up") -> Any | None:
    """`x` cast to `target` when float8 is on either side; None to leave the cast to TVM."""
    src = _dtype(x)
    if target == "float8_e8m0fnu" and _is_float(src) and src != "float8_e8m0fnu":
        return _encode_e8m0(bb, x, saturate, round_mode)
    if src in _FLOAT8.values():
        return _decode_float8(bb, x, target, saturate)
    if target in _FLOAT8.values():
        if src == "bool":
            x = bb.emit(_relax().op.astype(x, "float32"))
        return _encode_float8(bb, x, target, saturate)
    return None


def cast(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Cast from or to a float8 type; only such Cast nodes are taken over (see `applies_to`)."""
    target = _type_name(int(attrs["to"]))
    round_mode = attrs.get("round_mode", b"up")
    round_mode = round_mode.decode() if isinstance(round_mode, bytes) else str(round_mode)
    y = _convert_type(bb, inputs[0], target, bool(int(attrs.get("saturate", 1))), round_mode)
    return y if y is not None else _builtin("Cast", ctx)(bb, inputs, attrs, ctx.params)


def cast_like(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """CastLike from or to a float8 type."""
    y = _convert_type(bb, inputs[0], _dtype(inputs[1]), bool(int(attrs.get("saturate", 1))))
    return y if y is not None else _builtin("CastLike", ctx)(bb, inputs, attrs, ctx.params)


def _float8_tensor(name: str, graph: Any) -> bool:
    return bool(name) and _onnx_tensor_type(name, graph)[1] in _FLOAT8


def _casts_float8(node: Any, graph: Any) -> bool:
    """Cast whose target or source is float8 (the source type as the graph declares or infers it)."""
    attrs = {a.name: a for a in node.attribute}
    return ("to" in attrs and int(attrs["to"].i) in (*_FLOAT8, _E8M0)) or _float8_tensor(node.input[0], graph)


def _casts_like_float8(node: Any, graph: Any) -> bool:
    """CastLike whose target tensor or source is float8."""
    like = node.input[1] if len(node.input) > 1 else ""
    return _float8_tensor(like, graph) or _float8_tensor(node.input[0], graph)


cast.applies_to = _casts_float8  # type: ignore[attr-defined]
cast_like.applies_to = _casts_like_float8  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------- BitCast, EyeLike


def bit_cast(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """BitCast (opset 26): the same bits read as another type of the same width (TVM lacks the op)."""
    relax = _relax()
    x, target = inputs[0], _type_name(int(attrs["to"]))
    src = _dtype(x)
    if src == target:
        return x
    if src == "bool":  # TVM's bool is 1 bit wide; its storage byte is 0 or 1, which is what uint8/int8 read
        return relax.op.astype(x, target)
    if target == "bool":
        return relax.op.not_equal(x, relax.const(0, src))
    return _reinterpret(bb, x, target)


def eye_like(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """EyeLike with a `dtype` other than the input's.

    TVM's converter refuses such a dtype attribute, and relax's eye_like ignores its own dtype argument (the
    result keeps the input's type), so the 0/1 matrix is built in the input's type and cast (exact).
    """
    relax = _relax()
    x = inputs[0]
    dtype = _type_name(int(attrs["dtype"])) if "dtype" in attrs else _dtype(x)
    eye = relax.op.eye_like(x, int(attrs.get("k", 0)))
    return relax.op.astype(bb.emit(eye), dtype) if dtype != _dtype(x) else eye


# ------------------------------------------------------------------------------------- Split


def _split_sizes(node: Any, graph: Any) -> list[int] | None:
    """The node's explicit split sizes (input 1 from opset 13, else the `split` attribute), when constant."""
    if len(node.input) > 1 and node.input[1]:
        return _onnx_const_ints(node.input[1], graph)
    for a in node.attribute:
        if a.name == "split":
            return list(a.ints)
    return None


def _splits_zero(node: Any, graph: Any) -> bool:
    """Split with a zero-size part: TVM's split needs strictly increasing indices and fails to compile."""
    sizes = _split_sizes(node, graph)
    return sizes is not None and 0 in sizes


def split_with_empty_parts(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Split into the given sizes, zero-size parts included, as one strided slice per part."""
    relax = _relax()
    x = inputs[0]
    axis = int(attrs.get("axis", 0))
    axis = axis + _ndim(x) if axis < 0 else axis
    if len(inputs) > 1 and inputs[1] is not None:
        sizes = [int(v) for v in np.asarray(_const_value(inputs[1], "Split sizes", ctx)).reshape(-1)]
    else:
        sizes = [int(v) for v in attrs["split"]]
    parts, begin = [], 0
    for size in sizes:
        parts.append(bb.emit(relax.op.strided_slice(x, [axis], [begin], [begin + size])))
        begin += size
    return relax.Tuple(parts)


split_with_empty_parts.applies_to = _splits_zero  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------- Upsample


def upsample(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Upsample (opsets 7-9) nearest: out[i] = x[floor(i / scale)] per axis, as one gather per scaled axis.

    Why: TVM's converter reads `scales` from the attribute only (opset 9 moved it to an input, which must be
    constant here) and handles 4-D inputs with unit batch/channel scales only. The index maps depend on the
    static shape and scales alone; the gathers run on the data.
    """
    relax = _relax()
    x = inputs[0]
    if len(inputs) > 1 and inputs[1] is not None:
        scales = [float(v) for v in np.asarray(_const_value(inputs[1], "Upsample scales", ctx)).reshape(-1)]
    else:
        scales = [float(v) for v in attrs["scales"]]
    mode = attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode != "nearest":  # linear: TVM's resize2d, given the scales it looks for in the attribute
        return _builtin("Upsample", ctx)(bb, [x], {**attrs, "scales": scales}, ctx.params)
    shape = _static_shape(x, "Upsample")
    if len(scales) != len(shape):
        raise ValueError(f"Upsample scales has {len(scales)} values for a rank-{len(shape)} input")
    y = x
    for axis, (dim, scale) in enumerate(zip(shape, scales, strict=True)):
        if scale == 1.0:
            continue
        out = int(np.floor(dim * scale))
        index = np.minimum(np.floor(np.arange(out) / scale), dim - 1).astype(np.int64)
        y = bb.emit(relax.op.take(y, relax.const(index, "int64"), axis=axis))
    return y


# ------------------------------------------------------------------------------------- MaxPool indices


def _attr_str(attrs: dict, name: str, default: str) -> str:
    value = attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def _pool_windows(spatial: list[int], attrs: dict) -> tuple[list[int], np.ndarray]:
    """(output spatial dims, [out positions, kernel positions] flat input index; -1 where the window is padding).

    Output sizes and padding follow the ONNX MaxPool definition: explicit pads or auto_pad, dilations, strides,
    ceil_mode (a last window that would start in the end padding is dropped).
    """
    rank = len(spatial)
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides = [int(v) for v in attrs.get("strides", [1] * rank)]
    dilations = [int(v) for v in attrs.get("dilations", [1] * rank)]
    pads = [int(v) for v in attrs.get("pads", [0] * (2 * rank))]
    auto_pad = _attr_str(attrs, "auto_pad", "NOTSET")
    ceil_mode = bool(int(attrs.get("ceil_mode", 0)))
    outs, begins = [], []
    for i in range(rank):
        reach = dilations[i] * (kernel[i] - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-spatial[i] // strides[i])
            total = max((out - 1) * strides[i] + reach - spatial[i], 0)
            begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        elif auto_pad == "VALID":
            out, begin = (spatial[i] - reach) // strides[i] + 1, 0
        else:
            begin, span = pads[i], spatial[i] + pads[i] + pads[i + rank] - reach
            out = (-(-span // strides[i]) if ceil_mode else span // strides[i]) + 1
            if ceil_mode and (out - 1) * strides[i] >= spatial[i] + pads[i]:
                out -= 1
        outs.append(out)
        begins.append(begin)
    starts = np.stack(np.meshgrid(*[np.arange(o) * s - b for o, s, b in zip(outs, strides, begins, strict=True)],
                                  indexing="ij"), -1).reshape(-1, 1, rank)
    offsets = np.stack(np.meshgrid(*[np.arange(k) * d for k, d in zip(kernel, dilations, strict=True)],
                                   indexing="ij"), -1).reshape(1, -1, rank)
    pos = starts + offsets  # [P, K, rank]
    inside = np.all((pos >= 0) & (pos < np.array(spatial)), axis=-1)
    flat = np.ravel_multi_index(tuple(np.clip(pos, 0, np.array(spatial) - 1).transpose(2, 0, 1)), spatial)
    return outs, np.where(inside, flat, -1)


def max_pool_with_indices(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """MaxPool with its second output, Indices (TVM's converter returns the values only).

    Each window's elements are gathered from the data by a static index table (the padding reads the type's
    lowest value), the max and its first position are taken over the window, and the position is mapped to the
    flat input index ONNX defines (row-major, or column-major per spatial plane for storage_order=1).
    """
    relax = _relax()
    x = inputs[0]
    shape, dtype = _static_shape(x, "MaxPool with Indices"), _dtype(x)
    batch, channels, spatial = shape[0], shape[1], shape[2:]
    size = int(np.prod(spatial))
    outs, table = _pool_windows(spatial, attrs)
    windows, kernel = table.shape
    lowest = -np.inf if _is_float(dtype) else np.iinfo(np.dtype(dtype)).min
    flat = relax.op.reshape(x, [batch, channels, size])
    pad = relax.op.broadcast_to(relax.const(lowest, dtype), [batch, channels, 1])
    padded = bb.emit(relax.op.concat([flat, pad], axis=2))  # index `size` is the padding cell
    gather = np.where(table < 0, size, table).reshape(-1)
    values = bb.emit(relax.op.reshape(relax.op.take(padded, relax.const(gather, "int64"), axis=2),
                                      [batch, channels, windows, kernel]))
    y = relax.op.reshape(relax.op.max(values, axis=-1), [batch, channels, *outs])
    which = relax.op.astype(relax.op.argmax(values, axis=-1), "int64")  # [N, C, P]: first max in the window
    if int(attrs.get("storage_order", 0)):  # column-major within each spatial plane
        coords = np.unravel_index(np.clip(table, 0, None), spatial)
        table = np.where(table < 0, table, np.ravel_multi_index(coords[::-1], spatial[::-1]))
    pick = relax.op.add(which, relax.const(np.arange(windows) * kernel, "int64"))
    spatial_index = relax.op.take(relax.const(table.reshape(-1), "int64"), pick, axis=0)
    plane = (np.arange(batch * channels, dtype=np.int64) * size).reshape(batch, channels, 1)
    indices = relax.op.reshape(relax.op.add(spatial_index, relax.const(plane, "int64")), [batch, channels, *outs])
    return relax.Tuple([bb.emit(y), bb.emit(indices)])


def _wants_indices(node: Any, graph: Any) -> bool:
    return len(node.output) > 1 and bool(node.output[1])


max_pool_with_indices.applies_to = _wants_indices  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------- NonMaxSuppression


def non_max_suppression(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """NonMaxSuppression with ONNX's strict IoU test: a box is suppressed when IoU > iou_threshold.

    TVM's kernel suppresses at IoU >= threshold; for float32 IoUs, `iou >= nextafter(t, inf)` is exactly
    `iou > t`, so TVM's converter gets the next float32 up as its (constant) threshold.
    """
    relax = _relax()
    inputs = list(inputs)
    if len(inputs) > 3 and inputs[3] is not None:
        t = np.float32(np.asarray(_const_value(inputs[3], "NonMaxSuppression iou_threshold", ctx)).reshape(-1)[0])
        inputs[3] = relax.const(np.array([np.nextafter(t, np.float32(np.inf))], dtype=np.float32))
    return _builtin("NonMaxSuppression", ctx)(bb, inputs, attrs, ctx.params)


# ------------------------------------------------------------------------------------- optional graph inputs


def optional_has_element(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Refused for an optional-sequence graph input: whether it holds a value is known only at run time.

    The pack makes such an input an untyped parameter (frontend/hook.py), which may be empty; TVM's converter
    would answer "present" at import, a silently wrong result for an empty input.
    """
    raise ValueError("OptionalHasElement of an optional graph input is decided only at run time, which TVM "
                     "cannot express; feed the value as a plain input instead")


def _reads_untyped_input(node: Any, graph: Any) -> bool:
    return bool(node.input) and any(vi.name == node.input[0] and untyped_input(vi) for vi in graph.input)


optional_has_element.applies_to = _reads_untyped_input  # type: ignore[attr-defined]


CONVERTERS: dict[ConverterKey, Converter] = {
    ("", "Cast"): cast,
    ("", "CastLike"): cast_like,
    ("", "BitCast"): bit_cast,
    ("", "EyeLike"): eye_like,
    ("", "Split"): split_with_empty_parts,
    ("", "Upsample"): upsample,
    ("", "MaxPool"): max_pool_with_indices,
    ("", "NonMaxSuppression"): non_max_suppression,
    ("", "OptionalHasElement"): optional_has_element,
}
