"""The converter pack's image ops: Resize (the modes TVM 0.27 gets wrong), CenterCropPad, Col2Im, DeformConv,
and ConvTranspose with output_shape (AffineGrid's expanded cases need only fold.py's If inlining and
`pack_quantseq`'s Unsqueeze with a scalar `axes`).

Kept apart from `pack.py` (which merges `CONVERTERS` from here) so each op group has its own module. Every converter
builds a Relax graph over the runtime data; what is computed at import time is only what the ONNX node fixes
statically (sample positions and weights from constant scales/sizes/roi and static shapes, pad amounts).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harmonizer_deploy.frontend.hook import ConvertContext, Converter, ConverterKey

# ------------------------------------------------------------------------------- shared helpers


def _pack() -> Any:
    """pack.py's shared helpers, imported late: pack.py merges this module's CONVERTERS at its own import."""
    from harmonizer_deploy.frontend import pack

    return pack


def _relax() -> Any:
    from tvm import relax

    return relax


def _dtype(expr: Any) -> str:
    return str(expr.ty.dtype)


def _builtin_call(op_type: str, bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Hand the node back to TVM's own converter."""
    return _pack()._builtin(op_type, ctx)(bb, inputs, attrs, ctx.params)


def _static_shape(expr: Any) -> list[int] | None:
    """The input's dims when all are known integers, else None."""
    import tvm

    dims = expr.ty.shape if hasattr(expr.ty, "shape") and expr.ty.shape is not None else None
    if dims is None:
        return None
    if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    return [int(d) for d in dims]


def _optional_const(inputs: list, i: int, ctx: ConvertContext, what: str) -> np.ndarray | None:
    """A constant optional input as numpy; None when absent or empty. Raises ValueError when not constant."""
    import tvm

    if len(inputs) <= i or inputs[i] is None:
        return None
    expr = inputs[i]
    if isinstance(expr, tvm.relax.ShapeExpr):
        value = np.array([int(v) for v in expr.values], np.int64)
    else:
        value = np.asarray(_pack()._const_value(expr, what, ctx))
    return value if value.size else None


def _onnx_dims(name: str, graph: Any) -> list[int] | None:
    """Static dims of a tensor as the ONNX graph declares or infers them (None when any is unknown)."""
    for t in graph.initializer:
        if t.name == name:
            return list(t.dims)
    for vi in [*graph.input, *graph.value_info, *_pack()._inferred(graph)]:
        if vi.name == name and vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            dims = vi.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                return [int(d.dim_value) for d in dims]
            return None
    return None


def _attr_str(attrs: dict, name: str, default: str) -> str:
    value = attrs.get(name, default)
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _node_attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


# ------------------------------------------------------------------------------- Resize

_CTMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
         "tf_crop_and_resize")


def _source_coords(ctm: str, out_len: int, in_len: int, scale: float, roi: tuple[float, float]) -> np.ndarray:
    """Where each output position samples the input along one axis (ONNX Resize's coordinate transformation)."""
    y = np.arange(out_len, dtype=np.float64)
    out_width = scale * in_len  # the spec uses the unrounded length here
    if ctm == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if ctm == "half_pixel_symmetric":
        offset = (in_len / 2) * (1 - out_len / out_width)
        return offset + (y + 0.5) / scale - 0.5
    if ctm == "pytorch_half_pixel":
        return np.full(out_len, -0.5) if out_width == 1 else (y + 0.5) / scale - 0.5
    if ctm == "align_corners":
        return np.zeros(out_len) if out_width == 1 else y * (in_len - 1) / (out_width - 1)
    if ctm == "asymmetric":
        return y / scale
    start, end = roi  # tf_crop_and_resize
    if out_width == 1:
        return np.full(out_len, (end - start) * (in_len - 1) / 2 + start * (in_len - 1))
    return y * (end - start) * (in_len - 1) / (out_width - 1) + start * (in_len - 1)


def _nearest_index(x: np.ndarray, nearest_mode: str) -> np.ndarray:
    low = np.floor(x)
    frac = x - low
    if nearest_mode == "round_prefer_floor":
        up = frac > 0.5
    elif nearest_mode == "round_prefer_ceil":
        up = frac >= 0.5
    elif nearest_mode == "floor":
        up = np.zeros_like(frac, bool)
    elif nearest_mode == "ceil":
        up = frac > 0
    else:
        raise ValueError(f"Resize nearest_mode {nearest_mode!r} is not an ONNX mode")
    return (low + up).astype(np.int64)


def _kernel(mode: str, t: np.ndarray, a: float) -> np.ndarray:
    """The linear (triangle) or cubic (Keys, coefficient `a`) interpolation kernel at offsets `t`."""
    t = np.abs(t)
    if mode == "linear":
        return np.clip(1 - t, 0, 1)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _axis_taps(
    attrs: dict, in_len: int, out_len: int, scale: float, roi: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(indices [out, taps], weights [out, taps], extrapolated [out] or None) for one resized axis.

    Why at import time: they depend only on the static shape and the node's constant scales/sizes/roi; the
    runtime data is then gathered and weighted by a Relax graph.
    """
    mode = _attr_str(attrs, "mode", "nearest")
    ctm = _attr_str(attrs, "coordinate_transformation_mode", "half_pixel")
    x = _source_coords(ctm, out_len, in_len, scale, roi)
    if mode == "nearest":
        idx = _nearest_index(x, _attr_str(attrs, "nearest_mode", "round_prefer_floor"))[:, None]
        weights = np.ones(idx.shape)
    else:
        support = 1.0 if mode == "linear" else 2.0
        s = min(scale, 1.0) if int(attrs.get("antialias", 0)) else 1.0
        reach = math.ceil(support / s)
        base = np.floor(x).astype(np.int64)
        idx = base[:, None] + np.arange(1 - reach, reach + 1)[None, :]
        weights = _kernel(mode, s * (idx - x[:, None]), float(attrs.get("cubic_coeff_a", -0.75)))
        if s < 1.0:
            weights = weights / weights.sum(axis=1, keepdims=True)
        if int(attrs.get("exclude_outside", 0)):
            weights = np.where((idx < 0) | (idx >= in_len), 0.0, weights)
            total = weights.sum(axis=1, keepdims=True)
            weights = weights / np.where(total == 0, 1.0, total)
    extrapolated = None
    if ctm == "tf_crop_and_resize":
        outside = (x < 0) | (x > in_len - 1)
        extrapolated = outside if outside.any() else None
    return np.clip(idx, 0, in_len - 1), weights, extrapolated


def _resize_geometry(
    shape: list[int], attrs: dict, roi: np.ndarray | None, scales: np.ndarray | None, sizes: np.ndarray | None
) -> tuple[list[int], list[float], list[int], np.ndarray | None]:
    """(axes resized in order, per-dim scale, per-dim output size, full-rank roi) as ONNX Resize defines them."""
    rank = len(shape)
    axes = [int(a) % rank for a in attrs.get("axes", [])] or list(range(rank))
    scale = [1.0] * rank
    out = list(shape)
    if roi is not None:
        full_roi = np.array([0.0] * rank + [1.0] * rank)
        for i, d in enumerate(axes):
            full_roi[d], full_roi[rank + d] = roi[i], roi[len(axes) + i]
        roi = full_roi
    if sizes is not None:
        for i, d in enumerate(axes):
            out[d] = int(sizes[i])
            scale[d] = out[d] / shape[d]
        policy = _attr_str(attrs, "keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            picked = [scale[d] for d in axes]
            common = min(picked) if policy == "not_larger" else max(picked)
            for d in axes:
                scale[d] = common
                out[d] = int(common * shape[d] + 0.5)
    elif scales is not None:
        for i, d in enumerate(axes):
            scale[d] = float(scales[i])
            out[d] = int(np.float64(scales[i]) * shape[d])
    else:
        raise ValueError("Resize needs constant scales or sizes for this converter")
    return axes, scale, out, roi


def _is_identity(d: int, shape: list[int], scale: list[float], out: list[int], roi: np.ndarray | None) -> bool:
    rank = len(shape)
    same_roi = roi is None or (math.isclose(roi[d], 0.0) and math.isclose(roi[d + rank], 1.0))
    return math.isclose(scale[d], 1.0) and out[d] == shape[d] and same_roi


def _resize_axis(bb: Any, x: Any, d: int, idx: np.ndarray, weights: np.ndarray, extrapolated: np.ndarray | None,
                 fill: float, calc_dt: str) -> Any:
    """Gather the taps of axis `d` and sum them weighted (a plain gather for nearest)."""
    relax = _relax()
    rank = len(x.ty.shape)
    out_len, taps = idx.shape
    shape = [int(v) for v in x.ty.shape]
    if taps == 1:
        y = bb.emit(relax.op.take(x, relax.const(idx[:, 0].astype(np.int64)), axis=d))
    else:
        gathered = bb.emit(relax.op.take(x, relax.const(idx.reshape(-1).astype(np.int64)), axis=d))
        split = [*shape[:d], out_len, taps, *shape[d + 1:]]
        gathered = relax.op.reshape(gathered, split)
        w = relax.const(weights.reshape([out_len, taps] + [1] * (rank - d - 1)).astype(calc_dt))
        y = bb.emit(relax.op.sum(relax.op.multiply(gathered, w), axis=[d + 1]))
    if extrapolated is not None:
        mask = relax.const(extrapolated.reshape([out_len] + [1] * (rank - d - 1)))
        y = bb.emit(relax.op.where(mask, relax.const(fill, _dtype(y)), y))
    return y


def resize(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Resize as separable per-axis gathers with static weights: every mode, coordinate transformation,
    antialias, exclude_outside, keep_aspect_ratio_policy and axes of opset 11-19 (TVM 0.27 mis-scales downsampling
    by scales, lacks half_pixel_symmetric, antialias, axes and keep_aspect_ratio_policy). Only the nodes
    `applies_to` picks come here."""
    relax = _relax()
    x = inputs[0]
    shape = _static_shape(x)
    in_dt = _dtype(x)
    mode = _attr_str(attrs, "mode", "nearest")
    if shape is None or ctx.opset < 11 or (mode != "nearest" and "float" not in in_dt):
        return _builtin_call("Resize", bb, inputs, attrs, ctx)
    roi, scales, sizes = (_optional_const(inputs, i, ctx, f"Resize {name}")
                          for i, name in ((1, "roi"), (2, "scales"), (3, "sizes")))
    axes, scale, out, roi = _resize_geometry(shape, attrs, roi, scales, sizes)
    calc_dt = in_dt if in_dt in ("float32", "float64") or mode == "nearest" else "float32"
    y = relax.op.astype(x, calc_dt) if calc_dt != in_dt else x
    fill = float(attrs.get("extrapolation_value", 0.0))
    for d in axes:
        if _is_identity(d, shape, scale, out, roi):
            continue
        pair = (float(roi[d]), float(roi[d + len(shape)])) if roi is not None else (0.0, 1.0)
        idx, weights, extrapolated = _axis_taps(attrs, int(y.ty.shape[d]), out[d], scale[d], pair)
        y = _resize_axis(bb, y, d, idx, weights, extrapolated, fill, calc_dt)
    return relax.op.astype(y, in_dt) if calc_dt != in_dt else y


def _resize_applies(node: Any, graph: Any) -> bool:
    """Take over the Resize nodes TVM imports wrongly or not at all, when everything that fixes the sampling
    (input shape, roi/scales/sizes) is static; TVM keeps the rest."""
    if len(node.input) < 3:  # opset 10: X, scales
        return False
    attrs = _node_attrs(node)
    shape = _onnx_dims(node.input[0], graph)
    if shape is None:
        return False
    consts = [_pack()._onnx_array(node.input[i], graph) if len(node.input) > i else None for i in (1, 2, 3)]
    for i, value in zip((1, 2, 3), consts, strict=True):
        if len(node.input) > i and node.input[i] and value is None:
            return False  # a runtime roi/scales/sizes: only TVM's converter can take it
    roi, scales, sizes = (v if v is not None and v.size else None for v in consts)
    if scales is None and sizes is None:
        return False
    ctm = _attr_str(attrs, "coordinate_transformation_mode", "half_pixel")
    if ctm not in _CTMS:
        return False
    if (attrs.get("antialias", 0) or attrs.get("axes") or ctm == "half_pixel_symmetric"
            or _attr_str(attrs, "keep_aspect_ratio_policy", "stretch") != "stretch" or len(shape) not in (3, 4, 5)):
        return True
    _axes, scale, out, _roi = _resize_geometry(shape, attrs, roi, scales, sizes)
    if any(out[d] != shape[d] for d in (0, 1)):
        return True  # TVM resizes the spatial dims only
    # TVM samples with the ratio of the rounded sizes; ONNX with the given scale: they differ when
    # in * scale is not a whole number.
    return any(not math.isclose(out[d] / shape[d], scale[d], rel_tol=0, abs_tol=1e-9) for d in range(len(shape)))


resize.applies_to = _resize_applies  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------- CenterCropPad


def center_crop_pad(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Crop or zero-pad each named axis to the target length, centred (the odd cell goes to the end).

    The target `shape` input must be constant: it fixes the output shape.
    """
    relax = _relax()
    x = inputs[0]
    shape = _static_shape(x)
    if shape is None:
        raise ValueError("CenterCropPad needs a static input shape for this converter")
    target = _optional_const(inputs, 1, ctx, "CenterCropPad shape")
    if target is None:
        raise ValueError("CenterCropPad shape must be a constant (an initializer) for this converter")
    rank = len(shape)
    axes = [int(a) % rank for a in attrs.get("axes", [])] or list(range(rank))
    begin, end, pads = [0] * rank, list(shape), [0] * (2 * rank)
    for a, want in zip(axes, (int(v) for v in target.reshape(-1)), strict=False):
        have = shape[a]
        if want < have:
            begin[a] = (have - want) // 2
            end[a] = begin[a] + want
        elif want > have:
            pads[2 * a] = (want - have) // 2
            pads[2 * a + 1] = want - have - pads[2 * a]
    y = x
    if begin != [0] * rank or end != shape:
        y = bb.emit(relax.op.strided_slice(y, list(range(rank)), begin, end))
    if any(pads):
        y = bb.emit(relax.op.nn.pad(y, pads, pad_value=0.0))
    return y


# ------------------------------------------------------------------------------- ConvTranspose output_shape


def conv_transpose(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """ConvTranspose with `output_shape`: the spec's pads from the output shape, then TVM's converter (which
    ignores output_shape); a negative end pad (output larger than the full result) becomes output_padding."""
    x_shape, w_shape = _static_shape(inputs[0]), _static_shape(inputs[1])
    if x_shape is None or w_shape is None:
        raise ValueError("ConvTranspose output_shape needs static input and weight shapes for this converter")
    spatial = len(x_shape) - 2
    out_shape = [int(v) for v in attrs["output_shape"]][-spatial:]
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    out_pad = list(attrs.get("output_padding", [0] * spatial))
    kernel = list(attrs.get("kernel_shape", w_shape[2:]))
    upper = _attr_str(attrs, "auto_pad", "NOTSET") == "SAME_UPPER"
    begin, end = [], []
    for i in range(spatial):
        total = strides[i] * (x_shape[i + 2] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - out_shape[i]
        small, large = total // 2, total - total // 2
        b, e = (small, large) if upper else (large, small)
        if b < 0:
            raise ValueError(f"ConvTranspose output_shape {out_shape} needs a negative leading pad on axis {i}")
        if e < 0:
            out_pad[i], e = out_pad[i] - e, 0
        begin.append(b)
        end.append(e)
    new_attrs = {k: v for k, v in attrs.items() if k != "output_shape"}
    new_attrs.update(pads=begin + end, output_padding=out_pad, auto_pad=b"NOTSET")
    return _builtin_call("ConvTranspose", bb, inputs, new_attrs, ctx)


def _has_output_shape(node: Any, graph: Any) -> bool:
    return any(a.name == "output_shape" for a in node.attribute)


conv_transpose.applies_to = _has_output_shape  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------- Col2Im


def col2im(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Col2Im: scatter-add every column entry to its image position (static positions from the constant
    image_shape/block_shape and the attributes), then drop the pads."""
    relax = _relax()
    x = inputs[0]
    shape = _static_shape(x)
    image = _optional_const(inputs, 1, ctx, "Col2Im image_shape")
    block = _optional_const(inputs, 2, ctx, "Col2Im block_shape")
    if shape is None or image is None or block is None:
        raise ValueError("Col2Im needs a static input shape and constant image_shape/block_shape")
    image, block = [int(v) for v in image.reshape(-1)], [int(v) for v in block.reshape(-1)]
    n_dims = len(image)
    dil = list(attrs.get("dilations", [1] * n_dims))
    stride = list(attrs.get("strides", [1] * n_dims))
    pads = list(attrs.get("pads", [0] * 2 * n_dims))
    padded = [image[d] + pads[d] + pads[d + n_dims] for d in range(n_dims)]
    counts = [(padded[d] - (dil[d] * (block[d] - 1) + 1)) // stride[d] + 1 for d in range(n_dims)]
    k_total, l_total = int(np.prod(block)), int(np.prod(counts))
    batch, channels_k, length = shape
    if channels_k % k_total or length != l_total:
        raise ValueError(f"Col2Im input {shape} does not fit block {block} over image {image}")
    channels = channels_k // k_total
    # position in the padded image of (kernel offset k, block position l), both row-major
    ks = np.stack(np.unravel_index(np.arange(k_total), block), axis=1)  # [K, n]
    ls = np.stack(np.unravel_index(np.arange(l_total), counts), axis=1)  # [L, n]
    coords = ls[None, :, :] * np.array(stride) + ks[:, None, :] * np.array(dil)  # [K, L, n]
    flat = np.ravel_multi_index(tuple(coords[..., d] for d in range(n_dims)), padded).reshape(1, 1, -1)
    updates = relax.op.reshape(x, (batch, channels, k_total * l_total))
    index = relax.op.broadcast_to(relax.const(flat.astype(np.int64)), (batch, channels, k_total * l_total))
    zeros = relax.op.zeros((batch, channels, int(np.prod(padded))), _dtype(x))
    y = bb.emit(relax.op.scatter_elements(zeros, index, updates, axis=2, reduction="add"))
    y = relax.op.reshape(y, (batch, channels, *padded))
    if any(pads):
        axes = list(range(2, 2 + n_dims))
        y = relax.op.strided_slice(y, axes, pads[:n_dims], [pads[d] + image[d] for d in range(n_dims)])
    return y


# ------------------------------------------------------------------------------- DeformConv


def _bilinear_taps(bb: Any, ph: Any, pw: Any, height: int, width: int, dt: str) -> list[tuple[Any, Any]]:
    """The four bilinear corners of sample points (ph, pw): (flat index into H*W, weight); a corner outside
    the image weighs 0 (zero padding)."""
    relax = _relax()
    h0 = bb.emit(relax.op.floor(ph))
    w0 = bb.emit(relax.op.floor(pw))
    lh, lw = bb.emit(relax.op.subtract(ph, h0)), bb.emit(relax.op.subtract(pw, w0))
    one, zero = relax.const(1.0, dt), relax.const(0.0, dt)
    taps = []
    for dy in (0, 1):
        hi = bb.emit(relax.op.add(h0, relax.const(float(dy), dt)))
        wy = lh if dy else relax.op.subtract(one, lh)
        for dx in (0, 1):
            wi = bb.emit(relax.op.add(w0, relax.const(float(dx), dt)))
            wx = lw if dx else relax.op.subtract(one, lw)
            inside = relax.op.logical_and(
                relax.op.logical_and(relax.op.greater_equal(hi, zero), relax.op.less(hi, relax.const(height, dt))),
                relax.op.logical_and(relax.op.greater_equal(wi, zero), relax.op.less(wi, relax.const(width, dt))))
            weight = bb.emit(relax.op.where(inside, relax.op.multiply(wy, wx), zero))
            hc = relax.op.minimum(relax.op.maximum(hi, zero), relax.const(float(height - 1), dt))
            wc = relax.op.minimum(relax.op.maximum(wi, zero), relax.const(float(width - 1), dt))
            flat = relax.op.add(relax.op.multiply(hc, relax.const(float(width), dt)), wc)
            taps.append((bb.emit(relax.op.astype(flat, "int64")), weight))
    return taps


def deform_conv(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """2-D DeformConv: bilinear samples at the kernel positions moved by `offset` (zero outside the image),
    scaled by `mask`, then a grouped matrix product with the weights (im2col with learned offsets)."""
    relax = _relax()
    x, w, offset = inputs[0], inputs[1], inputs[2]
    bias = inputs[3] if len(inputs) > 3 else None
    mask = inputs[4] if len(inputs) > 4 else None
    x_shape, w_shape, off_shape = _static_shape(x), _static_shape(w), _static_shape(offset)
    if x_shape is None or w_shape is None or off_shape is None or len(x_shape) != 4:
        raise ValueError("DeformConv: this converter handles 2-D inputs with static shapes")
    n, c, height, width = x_shape
    oc, cpg, kh, kw = w_shape
    kh, kw = (int(v) for v in attrs.get("kernel_shape", (kh, kw)))
    oh, ow = off_shape[2:]
    group, og = int(attrs.get("group", 1)), int(attrs.get("offset_group", 1))
    sh, sw = (int(v) for v in attrs.get("strides", (1, 1)))
    dh, dw = (int(v) for v in attrs.get("dilations", (1, 1)))
    pads = [int(v) for v in attrs.get("pads", (0, 0, 0, 0))]
    k, p, dt = kh * kw, oh * ow, _dtype(x)
    # kernel position (i, j) of output (y, x) before the learned offset: [K, oH, oW]
    base_h = (np.arange(oh)[None, :, None] * sh - pads[0] + (np.arange(kh) * dh).repeat(kw)[:, None, None])
    base_w = (np.arange(ow)[None, None, :] * sw - pads[1] + np.tile(np.arange(kw) * dw, kh)[:, None, None])
    off = relax.op.reshape(offset, (n, og, k, 2, oh, ow))
    ph = relax.op.add(relax.op.squeeze(relax.op.strided_slice(off, [3], [0], [1]), [3]),
                      relax.const(np.broadcast_to(base_h, (k, oh, ow)).astype(dt)))
    pw = relax.op.add(relax.op.squeeze(relax.op.strided_slice(off, [3], [1], [2]), [3]),
                      relax.const(np.broadcast_to(base_w, (k, oh, ow)).astype(dt)))
    ph = bb.emit(relax.op.reshape(ph, (n, og, 1, k * p)))
    pw = bb.emit(relax.op.reshape(pw, (n, og, 1, k * p)))
    cog = c // og
    image = relax.op.reshape(x, (n, og, cog, height * width))
    sampled = None
    for index, weight in _bilinear_taps(bb, ph, pw, height, width, dt):
        gathered = relax.op.gather_elements(image, relax.op.broadcast_to(index, (n, og, cog, k * p)), axis=3)
        term = relax.op.multiply(gathered, weight)
        sampled = term if sampled is None else relax.op.add(sampled, term)
    if mask is not None:
        sampled = relax.op.multiply(sampled, relax.op.reshape(mask, (n, og, 1, k * p)))
    cols = relax.op.reshape(bb.emit(sampled), (n, group, cpg * k, p))
    weights = relax.op.reshape(w, (1, group, oc // group, cpg * k))
    y = relax.op.reshape(relax.op.matmul(weights, cols), (n, oc, oh, ow))
    if bias is not None:
        y = relax.op.add(y, relax.op.reshape(bias, (1, oc, 1, 1)))
    return y


CONVERTERS: dict[ConverterKey, Converter] = {
    ("", "Resize"): resize,
    ("", "CenterCropPad"): center_crop_pad,
    ("", "ConvTranspose"): conv_transpose,
    ("", "Col2Im"): col2im,
    ("", "DeformConv"): deform_conv,
}
