"""Hand-written CPU schedules for the harmonizer's kernels, so an untuned `compile --target cpu` is already fast.

TVM's default CPU pipeline leaves every kernel as plain nested loops: on this model that is ~2 GFLOP/s, some
160x slower than onnxruntime. Almost all the work is 3x3 convolutions, which after `ConvertLayout` to NHWC
(weights HWIO) are a matrix multiply over (rows = output pixels) x (cols = output channels) with the
reduction over (ky, kx, input channel). The schedule here is the classic register-blocked micro-kernel:
a tile of `rows` output pixels x `cols` channels lives in vector registers for the whole reduction (input
pixels broadcast, weight rows loaded as 16-lane vectors), the epilogue (bias, residual add, ReLU) is applied
while the tile is still hot, and tiles run in parallel over the CPU's cores.

With `[options] winograd` the 3x3 layers arrive as Winograd kernels (`winograd.py`) instead: one row of
tiles per parallel task, its input transform, the 24 transform-point products (the same register-blocked
micro-kernel, tiles x channels) and the output transform with the epilogue, all within the row's cache
footprint. Depthwise-separable layers (the Bach Doodle's) arrive fused by `separable.py`: each row's depthwise
(dilated) outputs computed first into L1, then the 1x1 product in 12-pixel x 2-vector register tiles (where a
row is too wide for L1: each tile computing its own pixels' depthwise outputs first); a depthwise
convolution left on its own gets rows of pixel runs in registers with the padding read in place, and a grouped
1x1 convolution the register tile. Everything else (padding, layout glue) gets parallel, vectorized loops;
reductions such as the final softmax are left to TVM's default lowering (they are tiny here). Tuned
MetaSchedule records, when present, are applied first; these schedules only take the kernels no record covers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from harmonizer_deploy.compiler.scheduling import SCHEDULED_ATTR, ScheduleReport, commit, is_scheduled


@dataclass(frozen=True)
class VectorMachine:
    """What the register tiles are sized for: the same schedules serve x86 (AVX-512) and wasm SIMD128."""

    lanes: int = 16            # float32 lanes of one vector register (AVX-512; two AVX2 registers: LLVM splits it)
    accumulator_rows: int = 4  # output pixels per tile; x 4 vectors of 16 channels = 16 accumulator registers
    channel_tile: int = 64     # output channels per tile (4 vectors)
    winograd_rows: int = 4     # Winograd tiles per register block of the transform-point products
    wide_pixels: int = 24      # pixels side by side when a tile holds one vector of channels per pixel
    parallel: bool = True      # tiles as parallel tasks (off where the runtime has one thread)
    # (pixels, channel vectors) of a separable layer's pointwise tile over a row whose depthwise outputs are
    # computed first (`_separable_rows`); None: the depthwise stage per tile of `_conv_tile` instead
    separable_tile: tuple[int, int] | None = (12, 2)
    row_stage_bytes: int = 32 * 1024  # a row's depthwise outputs must fit L1 (48 KB here) beside the weights


AVX512 = VectorMachine()
# wasm SIMD128: 4 float32 lanes, and V8 maps v128 values onto the 16 xmm registers of x86-64 (or 32 on Arm),
# so a tile is 2 pixels x 16 channels: 8 accumulators + 4 weight vectors + 1 broadcast input.
WASM_SIMD128 = VectorMachine(lanes=4, accumulator_rows=2, channel_tile=16, winograd_rows=2, wide_pixels=12,
                             parallel=False, separable_tile=None)
# the same tiles as parallel tasks, for the `wasm-mt` build whose runtime splits them over Web Workers
WASM_SIMD128_THREADS = replace(WASM_SIMD128, parallel=True)
VECTOR_LANES = AVX512.lanes  # the default machine's lanes (tests and tuning read it)


def machine_for(options: dict[str, Any]) -> VectorMachine:
    """A target's `[options] vector_machine = "avx512" | "wasm-simd128" | "wasm-simd128-threads"` (default
    avx512)."""
    machines = {"avx512": AVX512, "wasm-simd128": WASM_SIMD128, "wasm-simd128-threads": WASM_SIMD128_THREADS}
    return machines[options.get("vector_machine", "avx512")]



def _static(extent: Any) -> int | None:
    from tvm import tirx

    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _largest_divisor(extent: int | None, limit: int) -> int:
    """The largest tile size <= limit that divides `extent` exactly (1 when `extent` is symbolic)."""
    if extent is None:
        return 1
    return next(d for d in range(min(limit, extent), 0, -1) if extent % d == 0)


def _iter_types(sch: Any, block: Any) -> str:
    """'S'/'R' per block iterator: data-parallel or reduction."""
    return "".join("S" if int(iv.iter_type) == 0 else "R" for iv in sch.get(block).iter_vars)



def _fold_into_output(sch: Any, conv: Any, output: Any, producers: Any) -> Any:
    """Inline every root block but the conv, its `producers` and the output block, so the epilogue chain (bias,
    residual, ReLU) is computed where the output is written; a conv with no epilogue gets a write-back block.
    Returns the output block."""
    if sch.get(output).same_as(sch.get(conv)):
        output = sch.cache_write(conv, 0, "global")
    keep = {sch.get(b).name_hint for b in (conv, output, *producers)}
    for block in _root_blocks(sch):
        if sch.get(block).name_hint not in keep:
            sch.compute_inline(block)
    return output

def _root_blocks(sch: Any) -> list[Any]:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _conv_block(sch: Any) -> Any | None:
    """The NHWC convolution block of a fused kernel: loops (n, y, x, f, ky, kx, c), three of them reductions.
    A grouped convolution with several input channels per group (the Doodle's 4-way split 1x1 layer) is one
    too: each output channel reduces over its group's channels, which the same tile does (`group_channels`)."""
    found = [b for b in _root_blocks(sch)
             if (sch.get(b).name_hint.startswith("conv2d_nhwc")
                 or (sch.get(b).name_hint.startswith("group_conv2d_nhwc") and _group_channels(sch, b) > 1))
             and _iter_types(sch, b) == "SSSSRRR" and len(sch.get_loops(b)) == 7]
    return found[0] if len(found) == 1 else None


def _is_copy(sch: Any, block: Any) -> bool:
    """Whether a block only copies one buffer element to another (no condition, no arithmetic)."""
    from tvm import ir, tirx

    body = sch.get(block).body
    return isinstance(body, tirx.BufferStore) and isinstance(body.value, ir.TensorLoad)


def _group_channels(sch: Any, block: Any) -> int:
    """Input channels per group of a grouped convolution block (its innermost reduction; 0 if symbolic)."""
    return _static(sch.get(sch.get_loops(block)[-1]).extent) or 0


def _conv_tile(rows: int | None, width: int, channels: int, m: VectorMachine = AVX512) -> tuple[int, int, int, int]:
    """(output rows, output columns, output channels, vector lanes) of one register tile.

    Measured on a 2-core Zen 5, 3x3 conv 64->64 over 32x46 pixels: 2 rows x 2 columns x 64 channels (16
    accumulators, 4 weight vectors per step) reaches 540 GFLOP/s; 1 x 23 x 16 (23 accumulators, one weight
    vector, a 36 KB weight panel that stays in L1) 498 GFLOP/s without tiling the rows, which is what a
    symbolic batch x time needs; 1 x 2 x 64 (8 accumulators, too few to cover the FMA latency) 381 GFLOP/s.
    """
    lanes = _largest_divisor(channels, m.lanes)  # 64 → 16, 4 voices → 4, 24 → 12: at most one register
    wide_x = _largest_divisor(width, m.wide_pixels)
    even_rows = rows is not None and rows % 2 == 0 and width % 2 == 0
    if lanes == m.lanes and (even_rows or wide_x < 8):
        tile_x = _largest_divisor(width, 2)
        tile_rows = _largest_divisor(rows, max(1, m.accumulator_rows // tile_x))
        return tile_rows, tile_x, _largest_divisor(channels // lanes, m.channel_tile // lanes) * lanes, lanes
    # one (or a few: the 4 output voices) vector(s) of channels per pixel: many pixels side by side
    return 1, wide_x, lanes, lanes


def schedule_conv2d_nhwc(func: Any, m: VectorMachine = AVX512) -> Any | None:
    """Register-blocked direct convolution with its producers (padding) and epilogue fused; None if the
    function is not one NHWC convolution plus element-wise work."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    conv = _conv_block(sch)
    if conv is None:
        return None
    producers = []  # zero padding: staged per tile below, not a separate pass
    for producer in sch.get_producers(conv):
        if _is_copy(sch, producer):  # a 1x1 layer's "padding" with nothing to pad: read the input in place
            sch.compute_inline(producer)
        else:
            producers.append(producer)
    outputs = sch.get_output_blocks(sch.get_sblock("root"))
    if len(outputs) != 1:
        return None
    output = _fold_into_output(sch, conv, outputs[0], producers)

    n, y, x, f, ky, kx, c = sch.get_loops(conv)
    width, channels = _static(sch.get(x).extent), _static(sch.get(f).extent)
    if width is None or channels is None:
        return None
    rows = sch.fuse(n, y)  # batch x time: symbolic when the artifact takes any shape
    # a separable layer's depthwise stage is computed per row (or per tile of one row, for wide rows): one row
    # keeps its region exact (several batch x time rows span a batch boundary, which region analysis can't bound)
    staged = any("R" in _iter_types(sch, producer) for producer in producers)
    if staged and m.separable_tile is not None and _row_stage_bytes(sch, producers, width) <= m.row_stage_bytes:
        return _separable_rows(sch, conv, output, producers, rows, (x, f, ky, kx, c), m)
    tile_rows, tile_x, cols, lanes = _conv_tile(None if staged else _static(sch.get(rows).extent), width,
                                                channels, m)
    row_outer, row_inner = sch.split(rows, [None, tile_rows])
    x_outer, x_inner = sch.split(x, [None, tile_x])
    f_outer, f_vectors, f_lanes = sch.split(f, [None, cols // lanes, lanes])
    sch.reorder(row_outer, x_outer, f_outer, ky, kx, c, row_inner, x_inner, f_vectors, f_lanes)
    if staged:  # one batch x time row per parallel task, its column tiles in turn: measured 10% (batch 1) to
        tile = x_outer  # 16% (batch 8) faster on the Doodle than fusing rows and columns into one parallel loop
        if m.parallel:
            sch.parallel(row_outer)
    else:
        tile = sch.fuse(row_outer, x_outer)
        if m.parallel:
            sch.parallel(tile)
    for producer in producers:  # the tile's input window, zero-padded, copied once for all channel tiles
        sch.compute_at(producer, tile)
        if "R" in _iter_types(sch, producer):  # a separable layer's depthwise stage: the tile's pixels, in L1
            _depthwise_stage(sch, producer, tile, m)
        else:
            _vectorize_innermost(sch, producer, m.lanes)
    _accumulate_in_registers(sch, conv, output, f_outer, (row_inner, x_inner, f_vectors), f_lanes, ky, m.lanes)
    return sch.mod["main"]


def _accumulate_in_registers(sch: Any, conv: Any, output: Any, f_outer: Any, unrolled: tuple[Any, ...],
                             f_lanes: Any, reduction: Any, lanes: int) -> None:
    """The register tile's finish: the epilogue written per channel tile, the accumulators compacted to the
    tile (LLVM keeps them in registers), the tile's loops unrolled and its channel lanes vectorized."""
    sch.reverse_compute_at(output, f_outer)
    sch.set_scope(conv, 0, "local")
    for loop in unrolled:
        sch.unroll(loop)
    sch.vectorize(f_lanes)
    sch.decompose_reduction(conv, reduction)
    _vectorize_innermost(sch, output, lanes)


def _row_stage_bytes(sch: Any, producers: list[Any], width: int) -> int:
    """Bytes of one row of the staged depthwise outputs (float32: `separable.is_depthwise` takes no other)."""
    channels = [_static(_written_shape(sch, p)[-1]) for p in producers]
    return max((width * c * 4 if c is not None else 1 << 62 for c in channels), default=0)


def _separable_rows(sch: Any, conv: Any, output: Any, producers: list[Any], rows: Any,
                    loops: tuple[Any, ...], m: VectorMachine) -> Any:
    """A separable layer, one batch x time row per parallel task: the row's depthwise outputs (46 pixels x 128
    channels of the Doodle, 23 KB: L1) first, then the pointwise product in register tiles of `separable_tile`
    pixels x channel vectors, the epilogue applied to each tile as it leaves the registers.

    Why this tile: 12 pixels x 2 vectors is 24 accumulators fed by 14 loads (12 broadcast inputs, 2 weight
    vectors) per 24 FMAs, so the loop is bound by the FMA ports; the per-tile depthwise stage of `_conv_tile`
    (23 pixels x 1 vector: 24 loads per 23 FMAs) is bound by the load ports. Measured on the 2-vCPU Xeon
    (AVX-512), Doodle doodle-33x128 at T=32, 2 threads: 5.55 -> 4.91 ms at batch 1, 41.6 -> 36.9 ms at batch 8.
    The row width need not divide by the tile (46 = 3 x 12 + 10): the column tiles are unrolled, so the last
    one's bound check folds away and it is simply a narrower tile."""
    x, f, ky, kx, c = loops
    pixels, vectors = m.separable_tile
    lanes = _largest_divisor(_static(sch.get(f).extent), m.lanes)
    vectors = _largest_divisor(_static(sch.get(f).extent) // lanes, vectors)
    x_outer, x_inner = sch.split(x, [None, pixels])
    f_outer, f_vectors, f_lanes = sch.split(f, [None, vectors, lanes])
    sch.reorder(rows, x_outer, f_outer, ky, kx, c, x_inner, f_vectors, f_lanes)
    if m.parallel:
        sch.parallel(rows)
    for producer in producers:
        sch.compute_at(producer, rows)
        _depthwise_stage(sch, producer, rows, m)
    _accumulate_in_registers(sch, conv, output, f_outer, (x_outer, x_inner, f_vectors), f_lanes, ky, lanes)
    for loop in _inner_loops(sch, output, f_outer)[:-1]:  # constant indices: the accumulators never touch memory
        sch.unroll(loop)
    return sch.mod["main"]


def _depthwise_block(sch: Any) -> Any | None:
    """The NHWC depthwise convolution block of a fused kernel (groups = channels, one input channel per group):
    loops (n, y, x, f, ky, kx, c) with c of extent 1."""
    found = [b for b in _root_blocks(sch) if sch.get(b).name_hint.startswith(("group_conv2d_nhwc",
                                                                               "depthwise_conv2d_nhwc"))
             and _iter_types(sch, b) == "SSSSRRR" and len(sch.get_loops(b)) == 7
             and _group_channels(sch, b) == 1]
    return found[0] if len(found) == 1 else None


def schedule_depthwise_nhwc(func: Any, m: VectorMachine = AVX512) -> Any | None:
    """Depthwise (dilated) convolution: each output pixel is 9 (or 4) multiply-adds per channel, so the kernel is
    bound by loads, not by the multiplier. A tile is a run of adjacent output pixels of one row x one vector of
    channels, accumulated in registers over the unrolled kernel taps (one weight vector per tap, reused across
    the run); rows (batch x time) run in parallel. The zero padding is not materialized: a dilation of 16 x 32
    on 32 x 46 pixels would copy a padded tensor 2.5x the input per layer, so taps outside the image are
    skipped by a condition on the tap's row and column instead. Epilogue (bias, ReLU) applied in registers.
    None if the function is not one depthwise convolution plus element-wise work."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    conv = _depthwise_block(sch)
    if conv is None:
        return None
    outputs = sch.get_output_blocks(sch.get_sblock("root"))
    if len(outputs) != 1:
        return None
    output = _fold_into_output(sch, conv, outputs[0], ())  # the padding, too, is read in place

    n, y, x, f, ky, kx, c = sch.get_loops(conv)
    width, channels = _static(sch.get(x).extent), _static(sch.get(f).extent)
    if width is None or channels is None:
        return None
    lanes = _largest_divisor(channels, m.lanes)
    run = _largest_divisor(width, m.wide_pixels)
    rows = sch.fuse(n, y)
    x_outer, x_inner = sch.split(x, [None, run])
    f_outer, f_lanes = sch.split(f, [None, lanes])
    sch.reorder(rows, x_outer, f_outer, ky, kx, c, x_inner, f_lanes)
    if m.parallel:
        sch.parallel(rows)
    sch.reverse_compute_at(output, f_outer)
    sch.set_scope(conv, 0, "local")
    for loop in (ky, kx, x_inner):
        sch.unroll(loop)
    sch.vectorize(f_lanes)
    sch.decompose_reduction(conv, ky)
    _vectorize_innermost(sch, output, lanes)
    return sch.mod["main"]


def _depthwise_stage(sch: Any, block: Any, tile: Any, m: VectorMachine) -> None:
    """The depthwise stage of a separable kernel, computed at the pointwise tile: for each vector of channels
    and each (unrolled) tap, one weight vector multiplied into every pixel of the tile."""
    loops = sch.get_loops(block)
    *pixels, channels, ky, kx = loops[[sch.get(loop).same_as(sch.get(tile)) for loop in loops].index(True) + 1:]
    lanes = _largest_divisor(_static(sch.get(channels).extent), m.lanes)
    c_outer, c_lanes = sch.split(channels, [None, lanes])
    sch.reorder(c_outer, *pixels, ky, kx, c_lanes)
    for loop in (ky, kx, *pixels):
        sch.unroll(loop)
    sch.vectorize(c_lanes)
    sch.decompose_reduction(block, ky)


def schedule_separable(func: Any, m: VectorMachine = AVX512) -> Any | None:
    """A fused depthwise-separable layer (`separable.py`): the pointwise 1x1 product on the register tile of
    `schedule_conv2d_nhwc`, each tile first computing the depthwise outputs of its pixels for all channels into
    a small local buffer. None if the function has no separable kernel."""
    from tvm import s_tir

    from harmonizer_deploy.compiler.cpu.separable import DEPTHWISE

    if _named_block(s_tir.Schedule(func), DEPTHWISE) is None:
        return None
    return schedule_conv2d_nhwc(func, m)


def _named_block(sch: Any, prefix: str) -> Any | None:
    found = [b for b in _root_blocks(sch) if sch.get(b).name_hint.startswith(prefix)]
    return found[0] if len(found) == 1 else None


def schedule_winograd(func: Any, m: VectorMachine = AVX512) -> Any | None:
    """One row of Winograd tiles per parallel task (`winograd.conv2d_nhwc`, epilogue fused): the row's
    zero-padded input window, its transform and its 24 matrix products are computed into buffers that stay
    in L1/L2, then the output transform writes the row with bias/residual/ReLU applied. The products use
    the register-blocked micro-kernel of the direct convolution (tiles x 64 channels held in registers over
    the input-channel reduction). None if the function has no Winograd kernel."""
    from tvm import s_tir

    from harmonizer_deploy.compiler.cpu.winograd import OUTPUT, PAD, PRODUCTS, TILE, TRANSFORMED

    sch = s_tir.Schedule(func)
    stages = [_named_block(sch, name) for name in (PAD, TRANSFORMED, PRODUCTS, OUTPUT)]
    outputs = sch.get_output_blocks(sch.get_sblock("root"))
    if any(stage is None for stage in stages) or len(outputs) != 1:
        return None
    pad, transformed, products, output_transform = stages
    output = outputs[0]
    if not _same_shape(_written_shape(sch, output), _written_shape(sch, output_transform)):
        return None  # the epilogue changes the layout (e.g. a fused transpose): rows are not tile rows
    keep = {sch.get(b).name_hint for b in (pad, transformed, products, output)}
    for block in _root_blocks(sch):  # output transform + epilogue chain folded into the output block
        if sch.get(block).name_hint not in keep:
            sch.compute_inline(block)

    m_h, m_w = TILE
    n, h, w, k = sch.get_loops(output)
    tile_row, i = sch.split(h, [None, m_h])
    tile_col, j = sch.split(w, [None, m_w])
    k_outer, k_lanes = sch.split(k, [None, m.lanes])
    sch.reorder(n, tile_row, tile_col, k_outer, i, j, k_lanes)
    row = sch.fuse(n, tile_row)
    if m.parallel:
        sch.parallel(row)
    for block in (products, transformed, pad):
        sch.compute_at(block, row)
    for loop in (i, j):
        sch.unroll(loop)
    sch.vectorize(k_lanes)

    eh, ew, tiles, out_channels, reduction = _inner_loops(sch, products, row)
    point = sch.fuse(eh, ew)
    rows = _largest_divisor(_static(sch.get(tiles).extent), m.winograd_rows)
    tiles_outer, tiles_inner = sch.split(tiles, [None, rows])
    vectors = _largest_divisor(_static(sch.get(out_channels).extent) // m.lanes, m.channel_tile // m.lanes)
    f_outer, f_vectors, f_lanes = sch.split(out_channels, [None, vectors, m.lanes])
    sch.reorder(point, tiles_outer, f_outer, reduction, tiles_inner, f_vectors, f_lanes)
    accumulators = sch.cache_write(products, 0, "local")
    sch.reverse_compute_at(accumulators, f_outer)
    for loop in (tiles_inner, f_vectors):
        sch.unroll(loop)
    sch.vectorize(f_lanes)
    sch.decompose_reduction(products, reduction)
    _vectorize_innermost(sch, accumulators, m.lanes)

    eh, ew, tiles, channels = _inner_loops(sch, transformed, row)
    c_outer, c_lanes = sch.split(channels, [None, m.lanes])
    sch.reorder(tiles, c_outer, eh, ew, c_lanes)
    for loop in (eh, ew):
        sch.unroll(loop)
    sch.vectorize(c_lanes)
    _vectorize_innermost(sch, pad, m.lanes)
    return sch.mod["main"]


def _written_shape(sch: Any, block: Any) -> list[Any]:
    return list(sch.get(block).writes[0].source.shape)


def _same_shape(first: list[Any], second: list[Any]) -> bool:
    from tvm import sym

    analyzer = sym.Analyzer()
    return len(first) == len(second) and all(analyzer.can_prove_equal(a, b) for a, b in zip(first, second, strict=True))


def _inner_loops(sch: Any, block: Any, outer: Any) -> list[Any]:
    """The loops of `block` below `outer` that do more than one iteration."""
    loops = sch.get_loops(block)
    below = loops[[sch.get(loop).same_as(sch.get(outer)) for loop in loops].index(True) + 1:]
    return [loop for loop in below if _static(sch.get(loop).extent) != 1]


def _vectorize_innermost(sch: Any, block: Any, lanes: int = VECTOR_LANES) -> None:
    inner = sch.get_loops(block)[-1]
    extent = _static(sch.get(inner).extent)
    if extent is not None and extent % lanes == 0:
        _, vector = sch.split(inner, [None, lanes])
        sch.vectorize(vector)


def schedule_injective(func: Any, m: VectorMachine = AVX512) -> Any | None:
    """Element-wise / layout kernels: producers inlined, outer loops fused and run in parallel, the innermost
    (channel) loop vectorized. None for kernels with a reduction."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    blocks = _root_blocks(sch)
    if any("R" in _iter_types(sch, b) for b in blocks):
        return None
    outputs = sch.get_output_blocks(sch.get_sblock("root"))
    output_names = {sch.get(b).name_hint for b in outputs}
    for block in blocks:
        if sch.get(block).name_hint not in output_names:
            sch.compute_inline(block)
    for block in sch.get_output_blocks(sch.get_sblock("root")):
        loops = sch.get_loops(block)
        outer = [loop for loop in loops[:-1] if _static(sch.get(loop).extent) is not None]
        if not m.parallel:
            pass
        elif len(outer) == len(loops) - 1 and outer:  # static shapes: one parallel loop over everything
            sch.parallel(sch.fuse(*outer))
        elif len(loops) > 1:  # symbolic batch/time: parallel over the outermost loop only
            sch.parallel(loops[0])
        _vectorize_innermost(sch, block, m.lanes)
    return sch.mod["main"]


SCHEDULES = (("winograd-row-tasks", schedule_winograd), ("separable-register-tile", schedule_separable),
             ("depthwise-nhwc-pixel-runs", schedule_depthwise_nhwc),
             ("conv2d-nhwc-register-tile", schedule_conv2d_nhwc), ("injective-parallel", schedule_injective))


def schedule_function(func: Any, machine: VectorMachine = AVX512) -> tuple[Any, str]:
    """The function scheduled by the first schedule that applies, and its name ("default" when none does;
    "default (<schedule>: <error>)" when one matched but a primitive refused, e.g. on a symbolic shape)."""
    failed = ""
    for name, schedule in SCHEDULES:
        try:
            scheduled = schedule(func, machine)
        except Exception as exc:  # ScheduleError / InternalError from a primitive: keep TVM's default loops
            failed = f" ({name}: {str(exc).strip().splitlines()[-1][:160]})"
            continue
        if scheduled is not None:
            return scheduled.with_attr(SCHEDULED_ATTR, True), name
    return func, "default" + failed


def schedule_cpu_kernels(report: ScheduleReport | None = None, machine: VectorMachine = AVX512) -> Any:
    """A module pass: every PrimFunc not already scheduled (e.g. by tuned records) gets a hand schedule; what
    each kernel got goes into `report`."""
    report = report if report is not None else ScheduleReport()
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="HarmonizerCPUSchedule")
    def _pass(mod: Any, _ctx: Any) -> Any:
        report.functions.clear()
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            if is_scheduled(func):
                report.functions[gvar.name_hint] = "tuned-record"
                continue
            updated[gvar], report.functions[gvar.name_hint] = schedule_function(func, machine)
        return commit(mod, updated)

    return _pass
