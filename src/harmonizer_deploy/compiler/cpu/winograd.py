"""Winograd convolution for the CPU pipeline: the 3x3 layers with a third of the multiplies.

The harmonizer's 3x3 convolutions are ~95% of its FLOPs, and a direct convolution already runs them at the
machine's measured matrix-multiply peak, as does onnxruntime: the only way past onnxruntime is fewer
multiplies. Winograd's minimal filtering F(m, 3) computes m outputs of a 3-tap correlation from m + 2 inputs
with m + 2 multiplies instead of 3m. Nested in two dimensions, F(2, 3) along time and F(4, 3) along pitch
turn each 2 x 4 output tile into 24 element-wise products per (input, output) channel pair instead of 72:
a 3x cut, with the 24 products forming 24 independent (tiles x C_in) @ (C_in x C_out) matrix multiplies.

Pieces (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
    weight transform  U = G g G^T          per filter, once: lifted into `main_transform_params`
    input transform   V = B^T d B          per input tile of (m_h + 2) x (m_w + 2) pixels
    products          M[e] = V[e] @ U[e]   for each of the (m_h + 2)(m_w + 2) transform points e
    output transform  Y = A^T M A          per output tile of m_h x m_w pixels, then bias/residual/ReLU

`rewrite_conv2d` replaces qualifying Relax `nn.conv2d` calls by the weight-transform and Winograd kernels;
`cpu_schedule.schedule_winograd` runs one row of tiles per parallel task with every intermediate in cache.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np

# F(m, 3) transforms for a 3-tap correlation y[i] = sum_k x[i + k] g[k], i < m: (A^T, G, B^T).
# Interpolation points 0, +-1 (m = 2) and 0, +-1, +-2 (m = 4), plus the point at infinity.
TRANSFORMS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
    2: (np.array([[1, 1, 1, 0],
                  [0, 1, -1, -1]], dtype=np.float64),
        np.array([[1, 0, 0],
                  [1 / 2, 1 / 2, 1 / 2],
                  [1 / 2, -1 / 2, 1 / 2],
                  [0, 0, 1]], dtype=np.float64),
        np.array([[1, 0, -1, 0],
                  [0, 1, 1, 0],
                  [0, -1, 1, 0],
                  [0, 1, 0, -1]], dtype=np.float64)),
    4: (np.array([[1, 1, 1, 1, 1, 0],
                  [0, 1, -1, 2, -2, 0],
                  [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], dtype=np.float64),
        np.array([[1 / 4, 0, 0],
                  [-1 / 6, -1 / 6, -1 / 6],
                  [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6],
                  [0, 0, 1]], dtype=np.float64),
        np.array([[4, 0, -5, 0, 1, 0],
                  [0, -4, -4, 1, 1, 0],
                  [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0],
                  [0, 4, 0, -5, 0, 1]], dtype=np.float64)),
}
TILE = (2, 4)            # outputs per tile along (time, pitch): 24 transform points, 3x fewer multiplies
CHANNEL_MULTIPLE = 16    # channels must fill whole 16-lane vectors: the products are vectorized over them
KERNEL_PATTERN = 4       # Relax OpPatternKind kOutEWiseFusable: bias, residual and ReLU fuse after the kernel

PAD, TRANSFORMED, PRODUCTS = "winograd_pad", "winograd_input", "winograd_products"
OUTPUT, WEIGHTS = "winograd_output", "winograd_weights"


def _linear(terms: list[tuple[float, Any]]) -> Any:
    """sum(coefficient * value) with zero terms dropped and +-1 written as add/subtract."""
    from tvm import tirx

    out = None
    for coefficient, value in terms:
        if coefficient == 0:
            continue
        term = value if abs(coefficient) == 1 else value * tirx.const(abs(coefficient), value.dtype)
        if out is None:
            out = term if coefficient > 0 else -term
            continue
        out = out + term if coefficient > 0 else out - term
    assert out is not None, "a transform row with no non-zero coefficient"
    return out


def _by_index(index: Any, choices: list[Any]) -> Any:
    """choices[index] for a loop variable: a Select chain that folds to one branch once the loop is unrolled."""
    from tvm import tirx

    return reduce(lambda rest, pair: tirx.Select(index == pair[0], pair[1], rest),
                  reversed(list(enumerate(choices[:-1]))), choices[-1])


def _two_sided(left: np.ndarray, right: np.ndarray, value: Any) -> Any:
    """left @ X @ right^T for a 2-D tile X given as value(a, b), one Select-chained expression per entry."""
    def entry(i: int, j: int) -> Any:
        return _linear([(left[i, a] * right[j, b], value(a, b))
                        for a in range(left.shape[1]) for b in range(right.shape[1])])
    return lambda row, col: _by_index(row, [_by_index(col, [entry(i, j) for j in range(right.shape[0])])
                                            for i in range(left.shape[0])])


def weight_transform(weight: Any, tile: tuple[int, int] = TILE) -> Any:
    """U[eh, ew, c, k] = (G_h w[:, :, c, k] G_w^T)[eh, ew] for HWIO 3x3 weights."""
    from tvm import te

    (_, g_h, _), (_, g_w, _) = TRANSFORMS[tile[0]], TRANSFORMS[tile[1]]
    shape = (g_h.shape[0], g_w.shape[0], weight.shape[2], weight.shape[3])

    def point(eh: Any, ew: Any, c: Any, k: Any) -> Any:
        return _two_sided(g_h, g_w, lambda a, b: weight[a, b, c, k])(eh, ew)

    return te.compute(shape, point, name=WEIGHTS)


def conv2d_nhwc(data: Any, transformed_weight: Any, tile: tuple[int, int] = TILE) -> Any:
    """3x3, stride 1, padding 1 convolution of NHWC `data` with `weight_transform`'s output."""
    from tvm import sym, te, tirx

    (at_h, _, bt_h), (at_w, _, bt_w) = TRANSFORMS[tile[0]], TRANSFORMS[tile[1]]
    m_h, m_w = tile
    batch, height, width, channels = data.shape
    out_channels = transformed_weight.shape[3]
    # One tile row more than ceil(height / m_h) when m_h divides height: TVM's region check cannot prove that
    # ceil covers every h // m_h for a symbolic height. Free: the schedule computes only the rows read.
    tiles_h = sym.Analyzer().simplify(height // m_h + 1)
    tiles_w = (width + m_w - 1) // m_w
    padded = te.compute(
        (batch, tiles_h * m_h + 2, tiles_w * m_w + 2, channels),
        lambda n, r, s, c: tirx.if_then_else(
            tirx.all(r >= 1, r <= height, s >= 1, s <= width), data[n, r - 1, s - 1, c],
            tirx.const(0, data.dtype)),
        name=PAD)
    transformed = te.compute(
        (bt_h.shape[0], bt_w.shape[0], batch, tiles_h, tiles_w, channels),
        lambda eh, ew, n, ti, tj, c: _two_sided(
            bt_h, bt_w, lambda a, b: padded[n, ti * m_h + a, tj * m_w + b, c])(eh, ew),
        name=TRANSFORMED)
    rc = te.reduce_axis((0, channels), name="rc")
    products = te.compute(
        (bt_h.shape[0], bt_w.shape[0], batch, tiles_h, tiles_w, out_channels),
        lambda eh, ew, n, ti, tj, k: te.sum(transformed[eh, ew, n, ti, tj, rc]
                                            * transformed_weight[eh, ew, rc, k], axis=rc),
        name=PRODUCTS)
    return te.compute(
        (batch, height, width, out_channels),
        lambda n, h, w, k: _two_sided(
            at_h, at_w, lambda a, b: products[a, b, n, h // m_h, w // m_w, k])(h % m_h, w % m_w),
        name=OUTPUT)


def applies(call: Any) -> bool:
    """Whether a Relax call is a conv2d the Winograd kernel computes exactly: NHWC/HWIO, 3x3, stride 1,
    dilation 1, one group, padding 1 on every side, float32, static channel counts that fill vectors, static
    width (time and batch may be symbolic)."""
    from tvm import relax, tirx

    if not isinstance(call, relax.Call) or getattr(call.op, "name", None) != "relax.nn.conv2d":
        return False
    attrs = call.attrs
    if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NHWC", "HWIO", "NHWC"):
        return False
    if [int(v) for v in attrs.strides] != [1, 1] or [int(v) for v in attrs.dilation] != [1, 1]:
        return False
    if int(attrs.groups) != 1 or [int(v) for v in attrs.padding] != [1, 1, 1, 1]:
        return False
    data, weight = (arg.ty for arg in call.args)
    if data.dtype != "float32" or weight.dtype != "float32" or data.shape is None or weight.shape is None:
        return False
    dims = list(weight.shape)
    if not all(isinstance(d, tirx.IntImm) for d in dims) or not isinstance(list(data.shape)[2], tirx.IntImm):
        return False
    kh, kw, channels, out_channels = (int(d) for d in dims)
    return (kh, kw) == (3, 3) and channels % CHANNEL_MULTIPLE == 0 and out_channels % CHANNEL_MULTIPLE == 0


def rewrite_conv2d(tile: tuple[int, int] = TILE) -> Any:
    """A Relax module pass: each conv2d that `applies` becomes weight transform + Winograd kernel."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class _Rewriter(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not applies(call):
                return call
            data, weight = call.args
            transformed = self.builder_.emit_te(weight_transform, weight, tile, primfunc_name_hint=WEIGHTS)
            return self.builder_.emit_te(conv2d_nhwc, data, transformed, tile,
                                         primfunc_name_hint="winograd_conv2d")

    @tvm.transform.module_pass(opt_level=0, name="HarmonizerWinogradConv2d")
    def _pass(mod: Any, _ctx: Any) -> Any:
        rewriter = _Rewriter(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        updated = rewriter.builder_.get()
        for gvar, func in updated.functions_items():  # let FuseOps put the epilogue into the kernel
            if gvar.name_hint.startswith("winograd_conv2d"):
                updated[gvar] = func.with_attr("op_pattern", KERNEL_PATTERN)
        return updated

    return _pass
