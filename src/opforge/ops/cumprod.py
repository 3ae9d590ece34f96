"""CumProd (opset 26): TVM's ONNX frontend has no converter. With the axis constant and its length static it is
a chain of Mul over the axis's slices (y_k = y_(k-1) * x_k, walked backwards for reverse, shifted by one with a
leading 1 for exclusive), concatenated back: exact, the products formed in the order ONNX's reference forms them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

I64 = TensorProto.INT64
MAX_LENGTH = 256  # one Mul per position: longer axes are left to TVM (which has no CumProd)


def _cumprod(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    x, axis_in = node.input[:2]
    shape, axis_value = e.static_shape(x), e.initializer(axis_in)
    if shape is None or axis_value is None or not shape:
        return False
    axis = int(np.asarray(axis_value).reshape(-1)[0]) % len(shape)
    n = shape[axis]
    if not 0 < n <= MAX_LENGTH:
        return False
    elem = e.types.get(x, TensorProto.FLOAT)
    parts = [e.op("Gather", x, e.const([k], I64), axis=axis) for k in range(n)]  # axis kept, length 1
    order = list(range(n))[::-1] if a.get("reverse", 0) else list(range(n))
    out: dict[int, str] = {}
    running = None
    for k in order:
        if a.get("exclusive", 0):
            if running is None:
                one_shape = [1 if d == axis else s for d, s in enumerate(shape)]
                out[k] = e.const(np.ones(one_shape), elem)
            else:
                out[k] = running
            running = parts[k] if running is None else e.op("Mul", running, parts[k])
        else:
            running = parts[k] if running is None else e.op("Mul", running, parts[k])
            out[k] = running
    e.op("Concat", *(out[k] for k in range(n)), axis=axis, out=node.output[0])
    return True


RULES = [
    OpRule(
        ("CumProd",),
        lowering="decompose",
        summary="constant axis of static length (at most 256): a Mul chain over its slices, concatenated",
        rewrite=_cumprod,
    )
]
