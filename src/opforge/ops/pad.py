"""Pad: TVM's frontend needs constant_value as a constant. A constant-mode Pad whose constant_value arrives at run
time is written as Where(mask, Pad(x, pads, 0), constant_value), the mask being a Pad of ones by the same pads
(exact: every output element is either a copied input element or the value)."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule, text

I64, U8 = TensorProto.INT64, TensorProto.UINT8


def _runtime_value(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """Constant mode with a run-time constant_value, pads constant and the input's shape static."""
    ins = list(node.input)
    if text(a.get("mode"), "constant") != "constant" or len(ins) < 3 or not ins[2] or ins[2] in e.constants:
        return False
    if e.initializer(ins[1]) is None or (len(ins) > 3 and ins[3] and e.initializer(ins[3]) is None):
        return False
    shape, elem = e.static_shape(ins[0]), e.types.get(ins[0])
    if shape is None or elem is None:
        return False
    axes = ins[3:4] if len(ins) > 3 and ins[3] else []
    padded = e.op("Pad", ins[0], ins[1], e.const(0, elem), *axes, mode="constant")
    ones = e.op("Expand", e.const(1, U8), e.const(shape, I64))
    mask = e.op("Cast", e.op("Pad", ones, ins[1], e.const(0, U8), *axes, mode="constant"), to=TensorProto.BOOL)
    e.op("Where", mask, padded, ins[2], out=node.output[0])
    return True


RULES = [
    OpRule(
        ("Pad",),
        summary="TVM; a run-time constant_value through Where over a padded mask",
        rewrite=_runtime_value,
    )
]
