"""Pow: TVM's power is float-only and wants one type; an integer base or mixed types are decomposed."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import FLOATS, Emitter, OpRule


def _mixed_pow(e: Emitter, node: onnx.NodeProto, _a: dict) -> bool:
    """The result has the base's type. A float base takes the exponent in its type. An integer base goes through
    float64 and back with a truncating Cast, as ONNX's reference (NumPy's power, then astype) does; results within
    1e-9 of an integer snap to it first, so that an exact power off by an ulp does not truncate to one less."""
    x, y = node.input
    base, exponent = e.types.get(x), e.types.get(y)
    if base is None or exponent is None or (base == exponent and base in FLOATS):
        return False  # TVM's own Pow
    if base in FLOATS:
        e.op("Pow", x, e.op("Cast", y, to=base), out=node.output[0])
        return True
    f64 = TensorProto.DOUBLE
    r = e.op("Pow", e.op("Cast", x, to=f64), e.op("Cast", y, to=f64))
    nearest = e.op("Round", r)
    tol = e.op("Mul", e.op("Max", e.op("Abs", r), e.const(1.0, f64)), e.const(1e-9, f64))
    exact = e.op("LessOrEqual", e.op("Abs", e.op("Sub", r, nearest)), tol)
    e.op("Cast", e.op("Where", exact, nearest, r), to=base, out=node.output[0])
    return True


def _torch(torch, node, consts):
    return lambda x, y: torch.pow(x, y)


RULES = [
    OpRule(
        ("Pow",),
        lowering="rewrite",
        summary="TVM; an integer base or mixed types through float64 (or the base's float type)",
        rewrite=_mixed_pow,
        value_range=(0.1, 4.0),
        torch=_torch,
    )
]
