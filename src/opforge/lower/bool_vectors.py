"""No vector loads or stores of bool tensors, whichever schedule asked for them.

TVM's CUDA code types a vector of bools by their 1-bit width as if they were 16-bit: 2 lanes of a bool tensor
are read as a `ushort2` (4 bytes where the 2 bools are 2), 4 lanes as a `ushort4`. The bytes are wrong, and at
an offset that is not a multiple of the vector's size the address is misaligned, which kills the CUDA context.
Seen from DLight's Matmul rule (FlexAttention's causal mask, vectorised 2 lanes in the `Where` epilogue of the
score matmul) and from opforge's tuned spatial rule (a TensorScatter mask, 4 lanes). Every schedule rule may
vectorise such a loop, so the fix sits after scheduling, on every function compiled: a vectorised loop around a
block that reads or writes a bool buffer runs its lanes unrolled instead (the same elements, one at a time).
"""

from __future__ import annotations

from tvm import s_tir, tirx


def scalarize_bool_vectors(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`func` with each vectorised loop around a block touching a bool buffer unrolled instead (`func` itself when
    there is none, or when it is not a scheduled block-level function: opforge's hand-written kernels, which build
    their loops directly and vectorise no bool buffer)."""
    try:
        sch = s_tir.Schedule(func)
        blocks = _all_blocks(sch)
    except Exception:  # not a block-level function: nothing a schedule rule vectorised
        return func
    changed = False
    for block in blocks:
        if not touches_bool(sch, block):
            continue
        for loop in sch.get_loops(block):
            if sch.get(loop).kind == tirx.ForKind.VECTORIZED:
                sch.unroll(loop)
                changed = True
    return sch.mod["main"] if changed else func


def touches_bool(sch: s_tir.Schedule, block) -> bool:
    """Whether `block` reads or writes a bool buffer."""
    b = sch.get(block)
    return any(str(r.source.dtype) == "bool" for r in (*b.reads, *b.writes))


def _all_blocks(sch: s_tir.Schedule) -> list:
    """Every block of the schedule's function, outermost first (the root block excluded)."""
    found, stack = [], list(sch.get_child_blocks(sch.get_sblock("root")))
    while stack:
        block = stack.pop()
        found.append(block)
        stack.extend(sch.get_child_blocks(block))
    return found
