"""LpNormalization: x / ||x||_p along `axis` (ONNX allows p = 1 or 2), written with ReduceL1/ReduceL2."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule


def _lp_normalization(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """The norm is kept as a dimension of size 1; 0 where the norm is 0, as ONNX's reference gives (not 0/0)."""
    op, axis = ("ReduceL1" if a.get("p", 2) == 1 else "ReduceL2"), a.get("axis", -1)
    x = node.input[0]
    if e.opset() >= 18:  # reductions take their axes as an input from opset 18
        norm = e.op(op, x, e.const([axis], TensorProto.INT64), keepdims=1)
    else:
        norm = e.op(op, x, axes=[axis], keepdims=1)
    zero = e.const(0.0)
    e.op("Where", e.op("Equal", norm, zero), zero, e.op("Div", x, norm), out=node.output[0])
    return True


RULES = [
    OpRule(
        ("LpNormalization",),
        lowering="decompose",
        summary="x / ReduceL1|L2(x) along axis, 0 where the norm is 0",
        rewrite=_lp_normalization,
    )
]
