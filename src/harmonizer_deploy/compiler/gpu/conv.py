"""A register-tiled direct convolution for GPUs that are really CPUs (WebGPU on SwiftShader), and real ones.

dlight has no convolution rule: its Fallback gives each thread one output pixel and accumulates the whole
C_in x KH x KW reduction into a *global* buffer, re-deriving the pixel's coordinates (divisions by the
symbolic time length) on every step; its Matmul rule needs shared-memory tiles and barriers, which
SwiftShader (headless Chromium's WebGPU adapter, running shaders on the CPU) executes very slowly.

This rule keeps the whole reduction in registers instead: each thread computes a small tile of
`channels_per_thread` output channels x `width_per_thread` output columns of one output row; per input
channel and kernel row it loads the tile's weights and its padded input row segment into registers (`local`
buffers, the zero padding computed while loading) and does channels x width x kernel-width multiply-adds from
them. One workgroup covers one output row (all columns, up to 256 threads' worth of channels), so workgroups
are few and fat, every loop a thread runs has a static trip count, and no barrier or shared memory is
needed. The epilogue fused after the convolution (bias, residual add, ReLU) is computed from the registers
and written once.

Tile size, measured on SwiftShader (default model, [1, 32], 2 loaded cores): 8 x 2 and 8 x 4 run alike;
8 x 8 and 16 x 4 (64 accumulators) are slower and take far longer to compile; 4 x 23 did not finish in 300 s.

It applies to a fused function whose single reduction is TVM's `conv2d_nchw` (one group; scheduled in tests
for 3x3, dilated 3x3, 2x2 with asymmetric padding and 1x1 kernels, stride 1; run in Chromium: the default
model's 3x3 and 2x2, the Bach Doodle's 1x1), with only element-wise or padding blocks around
it, and a static number of output channels and columns (batch and rows may be symbolic). Anything else:
`apply` returns None and the next rule is tried.
"""

from __future__ import annotations

from typing import Any

# The reduction block TOPI's conv2d_nchw legalization makes. Not group_conv2d_nchw (grouped, depthwise): with
# this rule the Bach Doodle's depthwise kernels made Chromium's SwiftShader WebGPU lose its device while creating
# the pipelines ("A valid external Instance reference no longer exists"); they keep dlight's Fallback.
CONV_BLOCKS = ("conv2d_nchw",)
RULE_NAME = "DirectConv2d"


def _divisor(extent: int, preferred: tuple[int, ...]) -> int:
    """The first of `preferred` that divides `extent` (1 divides everything)."""
    return next((f for f in preferred if extent % f == 0), 1)


def _static(extent: Any) -> int | None:
    from tvm import tirx

    return int(extent) if isinstance(extent, tirx.IntImm | int) else None


class DirectConv2d:
    """dlight-style rule object (`apply(func, target, tunable)` -> Schedule or None) for NCHW convolutions."""

    def __init__(self, channels_per_thread: tuple[int, ...] = (8, 4, 2, 1),
                 width_per_thread: int = 2, max_threads: int = 256) -> None:
        self.channels_per_thread = channels_per_thread
        self.width_per_thread = width_per_thread
        self.max_threads = max_threads

    def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
        """Inputs and weights cached per kernel row, unless the conv is dilated along the columns: the row
        segment a thread would load then spans the dilation (66 values for 6 used at dilation 32), so they are
        cached per kernel tap instead."""
        from tvm import tirx

        if not isinstance(func, tirx.PrimFunc):
            return None
        scheduled = self._schedule(func, target, per_row=True)
        if scheduled is None:
            return None
        sch, compact = scheduled
        return sch if compact else self._schedule(func, target, per_row=False)[0]

    def _schedule(self, func: Any, target: Any, per_row: bool) -> tuple[Any, bool] | None:
        """The schedule and whether each loaded input segment is only the columns the tile uses."""
        from tvm import s_tir, tirx

        sch = s_tir.Schedule(func)
        try:
            blocks = sch.get_child_blocks(sch.get_sblock("root"))
        except Exception:  # no root block (an already lowered or opaque function): not ours
            return None
        convs = [b for b in blocks if sch.get(b).name_hint in CONV_BLOCKS]
        if len(convs) != 1:
            return None
        conv = convs[0]
        kinds = [iv.iter_type for iv in sch.get(conv).iter_vars]
        spatial, reduce = tirx.IterVar.DataPar, tirx.IterVar.CommReduce
        if len(kinds) < 5 or kinds[:4] != [spatial] * 4 or any(k != reduce for k in kinds[4:]):
            return None
        loops = sch.get_loops(conv)
        if len(loops) != len(kinds):
            return None
        extents = [_static(sch.get(loop).extent) for loop in loops]
        out_channels, width = extents[1], extents[3]
        if out_channels is None or width is None or None in extents[4:]:
            return None

        pads = [b for b in sch.get_producers(conv)]
        epilogue = self._inline_around(sch, conv, pads)
        if epilogue is False:
            return None
        if epilogue is None:  # the convolution writes the output: accumulate in registers, write once
            epilogue = sch.cache_write(conv, 0, "local")
        else:
            sch.set_scope(conv, 0, "local")
        max_threads = min(self.max_threads, _max_threads(target))

        # Register tiles: output channels x columns per thread; one output row per workgroup.
        co_tile = _divisor(out_channels, self.channels_per_thread)
        w_tile = min(self.width_per_thread, width)
        col_groups = -(-width // w_tile)  # the last group's extra columns are predicated off
        if col_groups > max_threads:
            return None
        ch_groups = out_channels // co_tile
        ch_threads = _divisor(ch_groups, tuple(d for d in range(min(ch_groups, max_threads // col_groups), 0, -1)))
        n, co, h, w, *r_loops = loops
        co_block, co_thread, co_inner = sch.split(co, [ch_groups // ch_threads, ch_threads, co_tile])
        # No predicate on the multiply-adds: the last group's extra columns read zero padding into registers
        # and are never stored (the epilogue below keeps its bound check).
        w_thread, w_inner = sch.split(w, [col_groups, w_tile], disable_predication=True)
        sch.reorder(n, co_block, h, co_thread, w_thread, *r_loops, co_inner, w_inner)
        # Rows on blockIdx.x, (batch, channel block) on blockIdx.y: fusing them into one index would make every
        # thread re-derive its row with integer divisions by the symbolic row count, inside the loops.
        by = sch.fuse(n, co_block)
        tx = sch.fuse(co_thread, w_thread)
        sch.bind(by, "blockIdx.y")
        sch.bind(h, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")

        # Per kernel row (input channel, kernel row): the weights and (padded) input row segment the tile needs,
        # loaded once into registers; the kernel columns then reuse them from registers.
        at = r_loops[-2] if per_row and len(r_loops) >= 2 else r_loops[-1]
        span = w_tile + (extents[-1] - 1 if at is not r_loops[-1] else 0)  # columns one load step needs
        loaders, compact = [], True
        for pad in pads:
            sch.set_scope(pad, 0, "local")
            sch.compute_at(pad, at, preserve_unit_loops=True)
            loaders.append(pad)
            compact = compact and (_static(sch.get(sch.get_loops(pad)[-1]).extent) or 0) <= span
        weight_index = _weight_read_index(sch, conv)
        if weight_index is not None:
            weights = sch.cache_read(conv, weight_index, "local")
            sch.compute_at(weights, at, preserve_unit_loops=True)
            loaders.append(weights)
        depth = 3 + r_loops.index(at) + 1  # blockIdx.y, blockIdx.x, threadIdx, the reductions to `at`
        for loader in loaders:
            for loop in sch.get_loops(loader)[depth:]:
                sch.unroll(loop)
        if at is not r_loops[-1]:
            sch.unroll(r_loops[-1])
        sch.decompose_reduction(conv, r_loops[0])
        sch.unroll(co_inner)
        sch.unroll(w_inner)
        sch.reverse_compute_at(epilogue, tx, preserve_unit_loops=True)
        for loop in sch.get_loops(epilogue)[3:]:
            sch.unroll(loop)
        return sch, compact

    @staticmethod
    def _inline_around(sch: Any, conv: Any, pads: list) -> Any:
        """Inline the element-wise blocks after the conv into the last one (the epilogue, returned; None when
        the conv writes the output itself). Producers must be inlinable or padding blocks (kept in `pads`,
        cached per reduction step). False when the function has anything else."""
        from tvm import tirx

        for producer in list(pads):
            if any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(producer).iter_vars):
                return False
        keep = {sch.get(conv).name_hint, *(sch.get(p).name_hint for p in pads)}
        root = sch.get_sblock("root")
        while True:
            others = [b for b in sch.get_child_blocks(root) if sch.get(b).name_hint not in keep]
            if len(others) <= 1:
                break
            for block in others:
                try:
                    sch.compute_inline(block)
                    break
                except Exception:  # not inlinable forward (the last block writes the output): try the next
                    continue
            else:
                return False
        if not others:
            return None
        (last,) = others
        if any(iv.iter_type != tirx.IterVar.DataPar for iv in sch.get(last).iter_vars):
            return False
        return last


def _weight_read_index(sch: Any, conv: Any) -> int | None:
    """Which read of the conv block is the weight (the buffer indexed only by output channel and reduction
    variables, i.e. not by batch or row): the one to cache per reduction step."""
    block = sch.get(conv)
    spatial_vars = {block.iter_vars[i].var for i in (0, 2, 3)}
    from tvm import tirx

    for index, region in enumerate(block.reads):
        used = {var for rng in region.region for var in tirx.analysis.undefined_vars(rng.min)}
        if not _source(region).same_as(_source(block.writes[0])) and not used & spatial_vars:
            return index
    return None


def _source(region: Any) -> Any:
    """The buffer a read/write region is of (TVM 0.27: `TensorRegion.source`; older: `BufferRegion.buffer`)."""
    return region.source if hasattr(region, "source") else region.buffer


def _max_threads(target: Any) -> int:
    value = target.attrs.get("max_num_threads") if hasattr(target, "attrs") else None
    return int(value) if value is not None else 256
