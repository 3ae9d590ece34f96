"""Max and min reductions that start from -inf and +inf.

TVM's `topi.max`/`topi.min` start a float reduction from the lowest/highest finite value (-3.4e38 for float32), so
the max of an empty set, or of a row that is all -inf, comes out finite. ONNX expects -inf there, and ONNX's
Attention body relies on it: it zeroes a fully masked row's softmax with `Where(ReduceMax(s) == -inf, 0, p)`.
Integer reductions keep TVM's legalization, whose identities are right for them.
"""

from __future__ import annotations

import tvm
from tvm import te, tirx


def _reducer(kind: str):
    inf = float("inf") if kind == "min" else float("-inf")
    combine = tirx.min if kind == "min" else tirx.max
    # comm_reducer wants a function of exactly two arguments; tirx.max/min take an optional span too.
    return te.comm_reducer(lambda a, b: combine(a, b), lambda t: tirx.const(inf, t), name=f"{kind}_from_inf")


def reduce_te(x: te.Tensor, axes: list[int] | None, keepdims: bool, kind: str) -> te.Tensor:
    """`axes`: the axes to reduce, None for all of them."""
    rank = len(x.shape)
    axes = sorted({a % rank for a in axes}) if axes is not None else list(range(rank))
    raxes = [te.reduce_axis((0, x.shape[a]), name=f"k{a}") for a in axes]
    reducer = _reducer(kind)
    kept = [d for d in range(rank) if d not in axes]
    shape = [1 if d in axes else x.shape[d] for d in range(rank)] if keepdims else [x.shape[d] for d in kept]

    def body(*idx):
        out_of = dict(zip(range(rank), idx)) if keepdims else dict(zip(kept, idx))
        full, r = [], iter(raxes)
        for d in range(rank):
            full.append(next(r) if d in axes else out_of[d])
        return reducer(x(*full), axis=raxes)

    return te.compute(shape, body, name=f"{kind}_from_inf")


def legalize(kind: str):
    """A LegalizeOps override for relax.max (kind "max") or relax.min ("min")."""
    default = tvm.ir.Op.get(f"relax.{kind}").get_attr("FLegalize")

    def f(bb, call):
        # An empty axis list reduces nothing (Relax's max(x, axis=[]) is x): no identity involved either.
        axis = call.attrs.axis
        code = tvm.DataType(str(call.args[0].ty.dtype)).type_code
        if code not in (tvm.DataTypeCode.FLOAT, tvm.DataTypeCode.BFLOAT) or (axis is not None and len(axis) == 0):
            return default(bb, call)
        axes = [int(a) for a in axis] if axis is not None else None
        return bb.call_te(reduce_te, call.args[0], axes, bool(call.attrs.keepdims), kind, primfunc_name_hint=kind)

    return f


def override_max(threads: int, config=None):
    """The op registry's entry point for relax.max (opforge.ops.reduce_extremes)."""
    return legalize("max")


def override_min(threads: int, config=None):
    """The op registry's entry point for relax.min (opforge.ops.reduce_extremes)."""
    return legalize("min")
