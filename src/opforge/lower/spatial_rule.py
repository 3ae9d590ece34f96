"""A DLight schedule rule for spatial kernels with tunable parameters (opforge.core.schedule.ScheduleConfig).

DLight's Fallback gives every spatial kernel one element per thread and the target's maximum block size. This
rule makes both tunable: block size, elements per thread, and whether a thread's elements are strided by the
block size (coalesced loads for any access pattern) or contiguous (vectorised loads and stores).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule
from tvm.tirx.analysis import undefined_vars

from opforge.core.schedule import ScheduleConfig

# The most lanes a vectorised loop gets: TVM's CUDA code for 8 lanes of a 64-bit value (an int64 index, or a
# float32 pair packed in one) calls make_longlong4 with 8 arguments, which nvcc refuses; 4 lanes are a float4 or
# a longlong4. A thread's run of 8 elements is two vectors of 4.
MAX_VECTOR_LANES = 4


class TunedSpatial(GPUScheduleRule):
    def __init__(self, config: ScheduleConfig):
        self.config = config

    def apply(self, func, target, _tunable):
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        infos = inline_keeping_reductions(sch, infos)
        if any(set(b.dom_kind()) - {"S"} or _is_reduction(sch, b.block_rv) for b in infos):
            # Reductions stay with DLight's reduction rules and the Fallback, a length-1 one (a K = 1 matmul,
            # which normalisation shows as spatial) included: merged with its epilogue it would count the
            # epilogue's other operand twice (inline_keeping_reductions).
            return None
        c = self.config
        for info in infos:
            block = info.block_rv
            loops = sch.get_loops(block)
            if not loops or any(sch.get(loop).thread_binding is not None for loop in loops):
                return None  # scalar blocks and blocks that bind their own threads (sorts) are not ours
            fused = sch.fuse(*loops)
            if c.layout == "strided":
                bx, k, tx = sch.split(fused, factors=[None, c.per_thread, c.threads])
                sch.bind(bx, "blockIdx.x")
                sch.bind(tx, "threadIdx.x")
                if c.per_thread > 1:
                    sch.unroll(k)
            else:
                bx, tx, k = sch.split(fused, factors=[None, c.threads, c.per_thread])
                sch.bind(bx, "blockIdx.x")
                sch.bind(tx, "threadIdx.x")
                if c.per_thread > MAX_VECTOR_LANES:
                    runs, k = sch.split(k, factors=[None, MAX_VECTOR_LANES])
                    sch.unroll(runs)
                sch.vectorize(k)
        return sch


class Tolerant(GPUScheduleRule):
    """A DLight rule that declines a function (returns None) where the wrapped rule raises, so the next rule in
    line gets it: DLight's Reduction rule fails on a full reduction to a scalar with an epilogue (ReduceMean to a
    0-d tensor), which GeneralReduction schedules."""

    def __init__(self, rule: GPUScheduleRule):
        self.rule = rule

    def apply(self, func, target, tunable):
        try:
            return self.rule.apply(func, target, tunable)
        except Exception:
            return None


class MatrixVectorGEMV(GPUScheduleRule):
    """DLight's GEMV rule, only for reductions of the shape it schedules: out[b, s] = sum_r A[b, s, r] * x[b, r].

    GEMV's matcher takes any operand that uses fewer block variables than the block as the vector, so it also
    accepts a depthwise convolution out[n, f] = sum_r x[n, f, r] * w[f, r], where the "vector" w varies with the
    output's innermost spatial index. Its schedule of that is wrong: the rfactor buffer is written and read at
    different indices (ONNX case causal_conv_with_state_decode_step). Such kernels go to the Reduction rules.
    """

    def __init__(self, rule: GPUScheduleRule):
        self.rule = rule

    def apply(self, func, target, tunable):
        if isinstance(func, tirx.PrimFunc) and not _vector_skips_inner_spatial(func):
            return None
        return self.rule.apply(func, target, tunable)


def _vars_of(region) -> set:
    return {v for r in region for v in undefined_vars(r.min)}


def _vector_skips_inner_spatial(func: tirx.PrimFunc) -> bool:
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if infos is None:
        return False
    for info in infos:
        if not info.is_reduction():
            continue
        block = sch.get(info.block_rv)
        spatial = {iv.var for iv in block.iter_vars if iv.iter_type == tirx.IterVar.DataPar}
        inner = [v for r in block.writes[0].region for v in undefined_vars(r.min) if v in spatial]
        if not inner:
            return False
        for read in block.reads:
            used = _vars_of(read.region)
            if 0 < len(used) < len(block.iter_vars) and inner[-1] in used:
                return False
    return True


def _is_reduction(sch: s_tir.Schedule, block) -> bool:
    """A block with an init statement or a reduction variable (normalisation drops length-1 reduction variables
    but keeps the init)."""
    b = sch.get(block)
    return b.init is not None or any(int(iv.iter_type) == int(tirx.IterVar.CommReduce) for iv in b.iter_vars)


def inline_keeping_reductions(sch: s_tir.Schedule, infos: list) -> list:
    """DLight's try_inline, except that a reduction block is never merged with its epilogue (neither inlined into
    its consumer nor the consumer into it): TVM 0.27 then makes the epilogue's other operand the reduction's init
    value and still adds it in the update, so it counts twice (MatMul with K = 1 followed by Add: out = 2c + a*b)."""
    while True:
        for k, info in enumerate(infos):
            if _is_reduction(sch, info.block_rv):
                continue
            try:
                sch.compute_inline(info.block_rv)
            except Exception:
                continue
            infos.pop(k)
            break
        else:
            for k, info in enumerate(infos):
                if any(_is_reduction(sch, p) for p in sch.get_producers(info.block_rv)):
                    continue
                try:
                    sch.reverse_compute_inline(info.block_rv)
                except Exception:
                    continue
                infos.pop(k)
                break
            else:
                return infos


class KeepReductionsFallback(GPUScheduleRule):
    """DLight's Fallback rule (every block one element per thread; reductions serial per thread) with its
    inlining replaced by inline_keeping_reductions: a reduction that no other rule takes (a contraction over
    a length-1 axis) is written to its own buffer and the epilogue reads it in a second kernel."""

    def apply(self, func, target, _tunable):
        from tvm.s_tir.dlight.base import max_threads_per_block
        from tvm.s_tir.dlight.gpu.fallback import _has_internal_thread_env

        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        infos = inline_keeping_reductions(sch, infos)
        threads = max_threads_per_block(target)
        reductions = []
        for info in infos:
            block = info.block_rv
            loops = sch.get_loops(block)
            if any(sch.get(loop).thread_binding is not None for loop in loops):
                continue
            if not loops and _has_internal_thread_env(sch.get(block).body):
                continue
            kinds: dict[str, list] = {"S": [], "R": [], "O": []}
            for loop, kind in zip(loops, info.dom_kind()):
                kinds[kind].append(loop)
            if not kinds["S"]:
                kinds["S"].append(sch.add_unit_loop(block))
            sch.reorder(*kinds["S"], *kinds["R"], *kinds["O"])
            bx, tx = sch.split(sch.fuse(*kinds["S"]), factors=[None, threads])
            sch.bind(bx, "blockIdx.x")
            sch.bind(tx, "threadIdx.x")
            if kinds["R"]:
                reductions.append((block, kinds["R"][0]))
        for block, loop in reductions:
            sch.decompose_reduction(block, loop)
        return sch
