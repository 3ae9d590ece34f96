"""Marking gathers as injective so that TVM fuses their index arithmetic into them.

AnnotateTIROpPattern calls every kernel that loads at a data-dependent index opaque, so FuseOps keeps the index
normalisation the ONNX frontend puts before a GatherND (where(i < 0, i + dim, i)) as a kernel of its own: two
launches and an index tensor through global memory for a gather of a few KB. A kernel made only of spatial blocks
(each computing every element of what it writes once, such as TVM's gather: a transpose of the indices, then the
gather) is injective whatever it reads, and fusing producers into it is sound.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func

OPAQUE, INJECTIVE = 8, 2  # relax OpPatternKind


def _only_spatial_blocks(func: tirx.PrimFunc) -> bool:
    try:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
    except Exception:  # not a te-style function (externs, bound threads): leave it opaque
        return False
    return bool(infos) and all(set(info.dom_kind()) == {"S"} for info in infos)


def _rewrite_prim_funcs(mod: tvm.IRModule, rewrite: Callable[[tvm.ir.GlobalVar, tirx.PrimFunc], tirx.PrimFunc | None]):
    """The module with each TIR function replaced by rewrite(gv, func) where that is not None."""
    updates = {gv: rewrite(gv, f) for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    for gv, func in updates.items():
        if func is not None:
            mod[gv] = func
    return mod


@tvm.transform.module_pass(opt_level=0, name="OpforgeMarkGathersInjective")
def mark_gathers_injective(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    def mark(_gv, func):
        pattern = func.attrs.get("op_pattern") if func.attrs is not None else None
        if pattern is not None and int(pattern) == OPAQUE and _only_spatial_blocks(func):
            return func.with_attr("op_pattern", INJECTIVE)
        return None

    return _rewrite_prim_funcs(mod, mark)


def _narrowable(func: tirx.PrimFunc) -> bool:
    """Every tensor static and under 2**31 elements, and none holding 64-bit integers: narrowing would change
    such a tensor's dtype (TVM refuses it for parameters; for intermediates, check the allocations)."""
    for p in func.params:
        shape = getattr(p, "shape", None)
        if shape is None:
            continue
        if any(not isinstance(d, tirx.IntImm) for d in shape) or str(p.dtype) in ("int64", "uint64"):
            return False
        if math.prod(d.value for d in shape) >= 2**31:
            return False
    text = func.script()
    return not any("alloc_buffer" in line and 'int64")' in line for line in text.splitlines())


@tvm.transform.module_pass(opt_level=0, name="OpforgeNarrowIndices")
def narrow_indices(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """int32 index arithmetic where every tensor of a kernel is small enough. Relax shapes are int64, and the
    int64 divisions and modulos of a resize's coordinate mapping make it compute-bound (a 64-bit division is a
    long instruction sequence on the GPU); TVM's own NarrowDataType leaves them when thread indices are int64."""

    def narrow(gv, func):
        if not _narrowable(func):
            return None
        return tirx.transform.ForceNarrowIndexToInt32()(tvm.IRModule({gv: func}))[gv]

    return _rewrite_prim_funcs(mod, narrow)
