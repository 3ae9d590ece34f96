"""ReverseSequence, which TVM's frontend lacks: a GatherElements along the time axis. For batch entry b and time t
the source is len[b] - 1 - t where t < len[b], else t (ONNX: the first len[b] steps reversed, the rest copied)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

I64 = TensorProto.INT64


def _gather(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    x, lens = node.input[:2]
    shape = e.static_shape(x)
    if shape is None or len(shape) < 2:
        return False
    rank = len(shape)
    time_axis, batch_axis = a.get("time_axis", 0) % rank, a.get("batch_axis", 1) % rank
    t_shape, b_shape = [1] * rank, [1] * rank
    t_shape[time_axis], b_shape[batch_axis] = shape[time_axis], shape[batch_axis]
    t = e.const(np.arange(shape[time_axis], dtype=np.int64).reshape(t_shape), I64)
    n = e.op("Reshape", e.op("Cast", lens, to=I64), e.const(b_shape, I64))
    reversed_t = e.op("Sub", e.op("Sub", n, e.const(1, I64)), t)
    source = e.op("Where", e.op("Less", t, n), reversed_t, t)
    full = e.op("Expand", source, e.const(shape, I64))
    e.op("GatherElements", x, full, axis=time_axis, out=node.output[0])
    return True


RULES = [
    OpRule(
        ("ReverseSequence",),
        lowering="decompose",
        summary="GatherElements along the time axis (len - 1 - t inside each sequence, t after it)",
        rewrite=_gather,
    )
]
