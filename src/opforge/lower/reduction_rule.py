"""A DLight schedule rule for long reductions that DLight's own reduction rules decline.

DLight's Reduction rule only takes sums (``X = X + Y``) and GeneralReduction only takes a reduction followed by an
injective epilogue, so a lone max or min (ReduceLogSumExp's row max, DynamicQuantizeLinear's global min and max)
reaches the Fallback rule, which gives each output one thread and runs the whole reduction serially in it: 64 rows
of 32768 elements become 64 threads of 32768 loads each, and a reduction to one scalar becomes one thread of the
whole tensor.

This rule takes any function with exactly one reduction block whose (static) reduction extent is long, and
spreads that reduction over a thread block: the reduction loop is split ``[chunks, serial, threads]`` and rfactored
twice, so each thread keeps a private partial over a strided, coalesced range, the threads of a block combine their
partials with a cross-thread allreduce, and where there are too few outputs to fill the GPU (a global min, a few
rows) each output's range is also split over several blocks (``chunks``) whose partials go to a global buffer that
a second kernel combines, one block per output. Any reducer TVM's rfactor recognises (sum, max, min, product) is
taken; where rfactor refuses, the rule declines and the Fallback schedules the function.

opforge's float max and min (lower/kernels/reductions.py) start from -inf and +inf, where TVM's reducer registry
knows max and min only with the lowest and highest finite value as identity, so rfactor and the cross-thread
allreduce lowering would refuse them. This module registers the two reducers with infinite identities
(`register_infinite_reducers`, done once at import) so they match. The function's other
blocks (spatial epilogues that read the reduced value) are scheduled as the Fallback does: their own kernels, one
element per thread.
"""

from __future__ import annotations

import logging

import tvm
import tvm_ffi
from tvm import s_tir, sym, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo, detect_dominant_read, normalize_prim_func
from tvm.s_tir.dlight.base import max_threads_per_block
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule
from tvm.target import Target

from opforge.lower.spatial_rule import _is_reduction, inline_keeping_reductions

log = logging.getLogger(__name__)

# A reduction shorter than this stays with the Fallback (a few serial steps per thread cost less than an allreduce).
MIN_REDUCTION = 32
# Where the reduction runs along the innermost (contiguous) axis of its input, the Fallback's thread per output
# also reads uncoalesced, so any reduction of MIN_REDUCTION or more is taken. Over an outer axis the Fallback's
# loads are coalesced; such a reduction is taken only where the outputs are too few to fill the GPU.
FEW_OUTPUTS = 16384
# Blocks the two-stage form aims for in all (about two per SM of a large GPU), and the fewest elements a thread of
# the first stage should reduce serially.
TARGET_BLOCKS = 256
MIN_PER_THREAD = 8


def _infinite_identity(sign: float):
    def identity(values):
        dtype = str(values[0].ty.dtype)
        if tvm.DataType(dtype).type_code in (tvm.DataTypeCode.FLOAT, tvm.DataTypeCode.BFLOAT):
            return [tirx.const(sign * float("inf"), dtype)]
        # Not a float: an identity the registry's own reducers already give, so nothing new matches.
        return [tirx.max_value(dtype) if sign > 0 else tirx.min_value(dtype)]

    return identity


# Kept alive for the process's lifetime and converted to FFI functions up front: a Python callable converted
# implicitly at registration is freed after the interpreter shuts down (the process aborts at exit).
_REDUCERS = (
    (tvm_ffi.convert(lambda x, y: [tirx.max(x[0], y[0])]), tvm_ffi.convert(_infinite_identity(-1.0))),
    (tvm_ffi.convert(lambda x, y: [tirx.min(x[0], y[0])]), tvm_ffi.convert(_infinite_identity(1.0))),
)
_registered = False


def register_infinite_reducers() -> None:
    """Register max with identity -inf and min with identity +inf in TVM's reducer registry (once)."""
    global _registered
    if _registered:
        return
    register = tvm_ffi.get_global_func("s_tir.schedule.RegisterReducer")
    for combiner, identity in _REDUCERS:
        register(1, combiner, identity)
    _registered = True


register_infinite_reducers()


def _pow2_floor(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def _pow2_ceil(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def plan_reduction(outputs: int, extent: int, max_threads: int) -> tuple[int, int] | None:
    """(threads per block, blocks per output) for a reduction of `extent` elements into each of `outputs` outputs,
    or None where the reduction is too short to be worth spreading."""
    if extent < MIN_REDUCTION:
        return None
    threads = min(max(32, _pow2_ceil(-(-extent // 4))), max_threads // 2, 512)
    chunks = 1
    if outputs < TARGET_BLOCKS:
        by_fill = _pow2_floor(TARGET_BLOCKS // outputs)
        by_work = _pow2_floor(extent // (threads * MIN_PER_THREAD))
        chunks = max(1, min(by_fill, by_work, max_threads))
    return threads, chunks


def _static(extent) -> int | None:
    return int(extent) if isinstance(extent, tirx.IntImm | int) else None


def _inner_is_reduction(sch: s_tir.Schedule, info: SBlockInfo) -> bool | None:
    """Whether the block's dominant read runs along a reduction variable in its innermost index (None: unknown)."""
    block = sch.get(info.block_rv)
    access = sym.normalize_to_iter_sum(detect_dominant_read(block), input_iters={i.var: i.dom for i in block.iter_vars})
    if not access.args:
        return None
    kinds = {i.var: i.kind for i in info.iters}
    kind = kinds.get(access.args[-1].source.source)
    return None if kind is None else kind == "R"


class CrossThreadReduction(GPUScheduleRule):
    """Spread one long reduction over the threads of a block, and over several blocks where the outputs are few
    (see the module's docstring)."""

    def apply(self, func, target: Target, _tunable):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        try:
            return self._apply(func, target)
        except Exception:  # a schedule primitive refused (rfactor of an unknown reducer): the Fallback takes it
            return None

    def _apply(self, func: tirx.PrimFunc, target: Target) -> s_tir.Schedule | None:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        infos = inline_keeping_reductions(sch, infos)
        reductions = [i for i in infos if _is_reduction(sch, i.block_rv)]
        if len(reductions) != 1:
            return None
        (red,) = reductions
        kinds = red.dom_kind()
        if "O" in kinds or "R" not in kinds or len(sch.get(red.block_rv).writes) != 1:
            return None
        loops = sch.get_loops(red.block_rv)
        if any(sch.get(loop).thread_binding is not None for loop in loops):
            return None
        spatial = [loop for loop, k in zip(loops, kinds) if k == "S"]
        reduce = [loop for loop, k in zip(loops, kinds) if k == "R"]
        s_ext = [_static(sch.get(loop).extent) for loop in spatial]
        r_ext = [_static(sch.get(loop).extent) for loop in reduce]
        if None in s_ext or None in r_ext:
            return None
        outputs = 1
        for e in s_ext:
            outputs *= e
        extent = 1
        for e in r_ext:
            extent *= e
        inner = _inner_is_reduction(sch, red)
        if inner is None or (not inner and outputs >= FEW_OUTPUTS):
            return None
        max_threads = max_threads_per_block(target)
        shape = plan_reduction(outputs, extent, max_threads)
        if shape is None:
            return None
        threads, chunks = shape

        # Every other block first, as the Fallback schedules it (loops fetched before the reduction's change).
        for info in infos:
            if info is not red:
                _schedule_spatial(sch, info, max_threads)

        block = red.block_rv
        sch.reorder(*spatial, *reduce)
        spatial = [loop for loop, e in zip(spatial, s_ext) if e != 1]
        if spatial:
            sch.fuse(*spatial)
        r = sch.fuse(*reduce)
        if chunks > 1:
            # Stage 1: each (output, chunk) pair reduces a contiguous range of the reduction into a global partial.
            c, r = sch.split(r, factors=[chunks, None])
            partial = sch.rfactor(c, 0)
            _schedule_block_reduce(sch, partial, threads)
            # Stage 2: one block per output combines the chunks' partials.
            *s2, c2 = sch.get_loops(block)
            sch.bind(s2[0] if s2 else sch.add_unit_loop(block), "blockIdx.x")
            sch.bind(c2, "threadIdx.x")
        else:
            _schedule_block_reduce(sch, block, threads)
        return sch


def _schedule_block_reduce(sch: s_tir.Schedule, block, threads: int) -> None:
    """One thread block per output instance of `block` (loops: spatial..., reduction), `threads` threads each
    reducing a strided range into a register, then a cross-thread allreduce."""
    # Unit loops (normalisation's, for a reduction to a scalar, are int64) stay out of the fusion: fused with int32
    # loops they make the bindings casts, which rfactor's write-back no longer sees as affine.
    *outer, r = sch.get_loops(block)
    outer = [loop for loop in outer if _static(sch.get(loop).extent) != 1]
    bx = sch.fuse(*outer) if len(outer) > 1 else outer[0] if outer else sch.add_unit_loop(block)
    _, tx = sch.split(r, factors=[None, threads])
    rf = sch.rfactor(tx, 0)
    bx, r, tx = sch.get_loops(rf)[-3:]
    sch.reorder(bx, tx, r)
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.annotate(r, ann_key="pragma_auto_unroll_max_step", ann_val=16)
    sch.annotate(r, ann_key="pragma_unroll_explicit", ann_val=1)
    sch.set_scope(rf, 0, "local")
    sch.decompose_reduction(rf, r)
    sch.reverse_compute_at(block, bx, preserve_unit_loops=True)
    # The allreduce wants the thread loop innermost: the unit spatial loops reverse_compute_at made go outside.
    loops = sch.get_loops(block)
    at = next(k for k, loop in enumerate(loops) if sch.get(loop).same_as(sch.get(bx)))
    tx2, *unit = loops[at + 1 :]
    if unit:
        sch.reorder(sch.fuse(*unit), tx2)
    sch.bind(tx2, "threadIdx.x")


def _schedule_spatial(sch: s_tir.Schedule, info: SBlockInfo, threads: int) -> None:
    block = info.block_rv
    loops = sch.get_loops(block)
    if any(sch.get(loop).thread_binding is not None for loop in loops):
        return
    if not loops:
        loops = [sch.add_unit_loop(block)]
    bx, tx = sch.split(sch.fuse(*loops), factors=[None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


class CappedThreads(GPUScheduleRule):
    """A DLight rule run with its threads per reduction capped at a tuned block size.

    DLight's Reduction rule gives every row 1024 threads on CUDA whatever the target's limit (its
    suggest_threads_per_block), so a tuning configuration's block size never reached it and every candidate of a
    row reduction was DLight's default: a half RMSNorm over rows of 4096 ran four elements per thread, two block-wide
    barriers per row, two resident blocks per SM. While the wrapped rule runs, the module's suggestion is capped at
    `threads` (lowering is single-threaded within a process)."""

    def __init__(self, rule: GPUScheduleRule, threads: int):
        self.rule = rule
        self.threads = threads

    def apply(self, func, target, tunable):
        import tvm.s_tir.dlight.gpu.reduction as reduction

        suggest = reduction.suggest_threads_per_block

        def capped(*args, **kwargs):
            return [t if t is None else min(t, self.threads) for t in suggest(*args, **kwargs)]

        reduction.suggest_threads_per_block = capped
        try:
            return self.rule.apply(func, target, tunable)
        finally:
            reduction.suggest_threads_per_block = suggest


# DLight's GeneralReduction (softmax, layer/group/RMS normalization: reductions and their epilogue in one kernel,
# one block per row) fixes its block size at this many threads on CUDA.
GENERAL_REDUCTION_THREADS = 256


class RowThreads(GPUScheduleRule):
    """DLight's GeneralReduction with a tuned block size per row.

    GeneralReduction splits every row loop ``[None, 256]`` on CUDA whatever the tuning configuration asks, so each
    candidate of a normalization or softmax was DLight's default: 64 rows of 32768 (a softmax) ran 64 blocks of
    256 threads on a 132-SM GPU, and 256 rows of 40960 (GroupNorm -> SiLU) one register-heavy block per SM. The
    rule's schedule is replayed from its trace with the thread split's factor set to `threads`; every other
    instruction (compute-at, scopes, unroll annotations) is kept as the rule made it."""

    def __init__(self, rule: GPUScheduleRule, threads: int):
        self.rule = rule
        self.threads = threads

    def apply(self, func, target, tunable):
        sch = self.rule.apply(func, target, tunable)
        if not isinstance(sch, s_tir.Schedule) or self.threads == GENERAL_REDUCTION_THREADS:
            return sch
        try:
            return _replay_with_threads(func, sch.trace, self.threads) or sch
        except Exception as e:  # the trace did not replay: DLight's schedule (the candidate equals the default)
            log.debug("GeneralReduction at %d threads per row did not replay: %s", self.threads, e)
            return sch


def _replay_with_threads(func, trace, threads: int) -> s_tir.Schedule | None:
    """The trace replayed on `func` with every thread split set to `threads`; None when it holds no such split
    (a GeneralReduction that changed how it splits: nothing to replace, DLight's schedule stands)."""
    from tvm.s_tir.schedule import Instruction, Trace

    insts, replaced = [], 0
    for inst in trace.insts:
        if inst.kind.name == "Split":
            loop, *factors = inst.inputs
            if factors and isinstance(factors[-1], tirx.IntImm) and int(factors[-1]) == GENERAL_REDUCTION_THREADS:
                factors = [*factors[:-1], tirx.IntImm(str(factors[-1].ty.dtype), threads)]
                inst = Instruction(inst.kind, [loop, *factors], inst.attrs, inst.outputs)
                replaced += 1
        insts.append(inst)
    if not replaced:
        return None
    sch = s_tir.Schedule(func)
    Trace(insts, {}).apply_to_schedule(sch, remove_postproc=False)
    return sch
