"""Det: TVM's ONNX frontend has no converter. For static matrices up to 3 x 3 it is the closed form (Leibniz):
a 2 x 2 determinant ad - bc, a 3 x 3 one expanded along its first row. Larger matrices are left to TVM (which
refuses): the closed form grows as n! and loses the pivoting a numerically sound LU has."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

I64 = TensorProto.INT64


def _det(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    x = node.input[0]
    shape = e.static_shape(x)
    if shape is None or len(shape) < 2 or shape[-1] != shape[-2] or shape[-1] not in (1, 2, 3):
        return False
    n = shape[-1]
    rows = [e.op("Gather", x, e.const(i, I64), axis=-2) for i in range(n)]
    m = [[e.op("Gather", r, e.const(j, I64), axis=-1) for j in range(n)] for r in rows]  # [...] each

    def det2(a_: str, b: str, c: str, d: str) -> str:
        return e.op("Sub", e.op("Mul", a_, d), e.op("Mul", b, c))

    if n == 1:
        out = m[0][0]
    elif n == 2:
        out = det2(m[0][0], m[0][1], m[1][0], m[1][1])
    else:
        c0 = e.op("Mul", m[0][0], det2(m[1][1], m[1][2], m[2][1], m[2][2]))
        c1 = e.op("Mul", m[0][1], det2(m[1][0], m[1][2], m[2][0], m[2][2]))
        c2 = e.op("Mul", m[0][2], det2(m[1][0], m[1][1], m[2][0], m[2][1]))
        out = e.op("Add", e.op("Sub", c0, c1), c2)
    e.op("Identity", out, out=node.output[0])
    return True


RULES = [
    OpRule(
        ("Det",),
        lowering="decompose",
        summary="static matrices up to 3 x 3: the closed-form determinant",
        rewrite=_det,
    )
]
