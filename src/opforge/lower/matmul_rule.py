"""A schedule rule for float32 matmul-like kernels (MatMul, Gemm, batched Einsum contractions) on CUDA cores.

DLight's Matmul rule leaves float32 (which tensor cores do not take without a precision change) to one fixed
schedule whose inner loop reads its operands from shared memory one scalar at a time, at a stride: on a batched
197x197x64 attention-score Einsum it runs at 0.60x cuBLAS, at every tile size. This rule normalizes the kernel the
same way (DLight's analysis: C[s, i, j] += A[s, i, k] * B[s, j, k]) and schedules it as a register-tiled SIMT GEMM:

  - a block computes a BM x BN tile of C with (BM/TM) x (BN/TN) threads, each a TM x TN micro tile in registers;
  - K advances BK at a time (optionally software-pipelined): the block stages A's BM x BK and B's BN x BK slices
    in shared memory *transposed* ([k][i] and [k][j], rows padded to 4 floats past a multiple of 32: aligned
    16-byte reads, at most 2-way conflicts on the transposing stores), read with 16-byte global loads along K;
  - each step of k reads a thread's TM values of A and TN of B as vectors (one 16-byte shared load per 4 values
    instead of one per value) and does TM x TN fused multiply-adds;
  - edges are padded to the tile (DLight's pad_einsum), so any extent is correct; the tile is chosen to pad little.

The tile comes from the tuned configuration (opforge.core.schedule.ScheduleConfig), so the tuner's search reaches
matmuls; untuned plans (config None) keep DLight's Matmul:

  threads    -> the block's threads: for static extents, the grid of threads/2 .. threads threads whose tile
                pads C the least (197x197 with 8x4 micro tiles and 128 threads: 5x25 threads, 40x100 tiles,
                200x200 computed, where 8x16 threads would compute 256x256); for symbolic extents 64 = 8x8,
                128 = 8x16, 256 = 16x16, 512 = 16x32, 1024 = 32x32
  per_thread -> the micro tile TM x TN and the K step BK: 1 = 8x4 (BK 32), 2 = 4x4 (BK 16), 4 = 8x4 (BK 16),
                8 = 8x4 (BK 32) with the K loop software-pipelined (two shared buffers: the next step's slices
                are staged while this one's are multiplied). BK is halved until the block's shared memory fits
                the 48 KB a kernel may hold statically.
  layout     -> not used: a thread's micro tile is always adjacent rows and columns (vector reads); both layouts
                give the same kernels, which the tuner measures once.
"""

from __future__ import annotations

import re

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule
from tvm.s_tir.dlight.gpu.matmul import (
    auto_inline_consumer_chain,
    auto_inline_producers,
    get_in_out_dtypes,
    get_index_map,
    get_reduction_blocks,
)

from opforge.core.schedule import ScheduleConfig

_THREAD_GRID = {64: (8, 8), 128: (8, 16), 256: (16, 16), 512: (16, 32), 1024: (32, 32)}  # (rows, columns)
_MICRO = {1: (8, 4, 32), 2: (4, 4, 16), 4: (8, 4, 16), 8: (8, 4, 32)}  # (TM, TN, BK)
_PIPELINED = {8}  # per_thread values whose K loop is software-pipelined
STATIC_SHARED_BYTES = 48 * 1024  # the most shared memory a kernel may declare statically (CUDA)


def _row_floats(extent: int) -> int:
    """Floats a staged row of `extent` takes in shared memory: padded to 4 past a multiple of 32
    (storage_align below)."""
    return extent + (4 - extent) % 32


def thread_grid(threads: int, tm: int, tn: int, rows: int | None, cols: int | None) -> tuple[int, int]:
    """The thread grid (rows x columns) of a block: for static extents, the one of `threads/2 .. threads` threads
    whose tile pads C the least (then: more threads, then the squarest tile); else the table's."""
    if rows is None or cols is None:
        return _THREAD_GRID[threads]

    def cost(grid: tuple[int, int]) -> tuple[int, int, int]:
        bm, bn = grid[0] * tm, grid[1] * tn
        padded = -(-rows // bm) * bm * (-(-cols // bn) * bn)
        # Padding within 2% counts as equal; then more threads, then the squarer tile (more reuse per load).
        return round(50 * padded / (rows * cols)), -grid[0] * grid[1], abs(bm - bn)

    grids = [(y, x) for y in range(1, threads + 1) for x in range(1, threads // y + 1) if y * x * 2 >= threads]
    return min(grids, key=cost)


def tile_of(config: ScheduleConfig, rows: int | None, cols: int | None) -> tuple[int, int, int, int, int]:
    """(thread rows, thread columns, TM, TN, BK) a tuned configuration stands for, for a C of `rows` x `cols`
    (None: not static). See the module's table."""
    tm, tn, bk = _MICRO[config.per_thread]
    ty, tx = thread_grid(config.threads, tm, tn, rows, cols)
    return ty, tx, tm, tn, bk


def carries_register_tile(source: str, config: ScheduleConfig) -> bool:
    """Whether a plan's CUDA source holds this rule's register tile under `config`: TM x TN accumulators and
    vectors of TM values of A and TN of B (a bounding box of interleaved rows would be larger)."""
    tm, tn, _ = _MICRO[config.per_thread]
    sizes = {int(n) for n in re.findall(r"float \w+_local_ptr\[(\d+)\]", source)}
    return "_shared_local_ptr" in source and {tm * tn, tm, tn} <= sizes and max(sizes) == tm * tn


class SimtMatmul(GPUScheduleRule):
    """Register-tiled float32 matmul under a tuned configuration; declines everything else (None)."""

    def __init__(self, config: ScheduleConfig):
        self.config = config

    def apply(self, func, target, _tunable):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        if target.kind.name != "cuda" or self.config.threads not in _THREAD_GRID:
            return None
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(get_root_block(sch))
        reductions = get_reduction_blocks(sch, blocks)
        if reductions is None:
            return None
        main = reductions[0]
        if not get_index_map(sch.get(main)) or get_in_out_dtypes(sch.get(main)) != ("float32", "float32"):
            return None
        return self._schedule(sch, main)

    def _schedule(self, sch: s_tir.Schedule, main) -> s_tir.Schedule:
        # Normalize to C[s, i, j] += A[s, i, k] * B[s, j, k] (DLight's analysis of the block's iterators).
        a_re = sch.reindex(main, ("read", 0))
        b_re = sch.reindex(main, ("read", 1))
        c_re = sch.reindex(main, ("write", 0))
        matmul_map, a_map, b_map, c_map = get_index_map(sch.get(main))
        sch.transform_layout(a_re, ("write", 0), a_map)
        sch.transform_layout(b_re, ("write", 0), b_map)
        sch.transform_layout(c_re, ("read", 0), c_map)
        sch.transform_block_layout(main, matmul_map)
        extents = [sch.get(loop).extent for loop in sch.get_loops(main)[1:3]]
        rows, cols = (int(e) if isinstance(e, tirx.IntImm) else None for e in extents)
        n_ty, n_tx, tm, tn, bk = tile_of(self.config, rows, cols)
        bm, bn = n_ty * tm, n_tx * tn
        stages = 2 if self.config.per_thread in _PIPELINED else 1
        while bk > 4 and stages * (_row_floats(bm) + _row_floats(bn)) * bk * 4 > STATIC_SHARED_BYTES:
            bk //= 2
        sch.pad_einsum(main, [1, bm, bn, bk])

        batch, i, j, k = sch.get_loops(main)
        bi, ti, ii = sch.split(i, [None, n_ty, tm])
        bj, tj, jj = sch.split(j, [None, n_tx, tn])
        ko, ki = sch.split(k, [None, bk])
        sch.reorder(batch, bi, bj, ti, tj, ko, ki, ii, jj)
        sch.bind(sch.fuse(batch, bi), "blockIdx.y")
        sch.bind(bj, "blockIdx.x")
        sch.bind(ti, "threadIdx.y")
        sch.bind(tj, "threadIdx.x")
        sch.annotate(tj, ann_key="pragma_auto_unroll_max_step", ann_val=256)
        sch.annotate(tj, ann_key="pragma_unroll_explicit", ann_val=1)

        # The micro tile's accumulators in registers, written out once after the K loop.
        acc = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(acc, tj, preserve_unit_loops=True)

        # A's and B's slices of this K step in shared memory, transposed to [k][i] and [k][j].
        for index in (0, 1):
            stage = sch.cache_read(main, index, "shared")
            sch.compute_at(stage, ko, preserve_unit_loops=True)
            sch.transform_layout(stage, ("write", 0), lambda s, x, kk: (s, kk, x))
            loops = sch.get_loops(stage)[-3:]
            # 16-byte loads along K (every BK in _MICRO, halved to no less than 4, is a multiple of 4)
            _, fy, fx, v = sch.split(sch.fuse(*loops), [None, n_ty, n_tx, 4])
            sch.bind(fy, "threadIdx.y")
            sch.bind(fx, "threadIdx.x")
            sch.vectorize(v)
            sch.storage_align(stage, 0, axis=1, factor=32, offset=4)  # _row_floats
            auto_inline_producers(sch, stage)

        # Each k step: the thread's TM values of A and TN of B from shared memory into registers, as vectors.
        for index in (0, 1):
            regs = sch.cache_read(main, index, "local")
            sch.compute_at(regs, ki, preserve_unit_loops=True)
            _, v = sch.split(sch.get_loops(regs)[-1], [None, 4])  # CUDA's widest vector: float4
            sch.vectorize(v)

        auto_inline_consumer_chain(sch, acc)
        sch.decompose_reduction(main, ko)
        if stages == 2:  # children of ko: A's staging, B's staging, the k steps
            sch.annotate(ko, "software_pipeline_stage", [0, 0, 1])
            sch.annotate(ko, "software_pipeline_order", [0, 1, 2])
        return sch
