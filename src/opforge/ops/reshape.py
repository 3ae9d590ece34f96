"""Reshape with allowzero=1: TVM's frontend turns the constant shape into a run-time shape (a MatchCast no plan can
hold). With a constant shape, allowzero matters only where the shape holds a 0: without one the attribute is
dropped; with one (and no -1, which ONNX forbids together with a 0 here) the output is the empty tensor of exactly
that shape, whatever the (then empty) input."""

from __future__ import annotations

import numpy as np
import onnx

from opforge.ops.base import Emitter, OpRule


def _allowzero(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    shape = e.initializer(node.input[1]) if len(node.input) > 1 else None
    elem = e.types.get(node.input[0])
    if not a.get("allowzero", 0) or shape is None or elem is None:
        return False
    dims = [int(d) for d in shape.reshape(-1)]
    if 0 not in dims:
        e.op("Reshape", node.input[0], node.input[1], out=node.output[0])
    elif -1 in dims:
        return False
    else:
        empty = e.const(np.zeros(dims), elem)
        e.op("Identity", empty, out=node.output[0])
    return True


RULES = [
    OpRule(
        ("Reshape",),
        summary="TVM; allowzero=1 with a constant shape written without it (an empty output as a constant)",
        rewrite=_allowzero,
    )
]
