"""TensorScatter (opset 24, a KV-cache update), which TVM's frontend lacks: written as a gather, so that no two
writes race. Along `axis`, cache position s of batch entry b takes update[j] with j = s - write_indices[b] (mode
circular: modulo the cache length) where 0 <= j < the update's length, else keeps past_cache (ONNX's reference
writes update[j] at write_indices[b] + j, wrapped in circular mode)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule, text

I64 = TensorProto.INT64


def _as_gather(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    past, update = node.input[:2]
    where = node.input[2] if len(node.input) > 2 and node.input[2] else None
    shape, up_shape = e.static_shape(past), e.static_shape(update)
    if shape is None or up_shape is None or len(shape) < 2:
        return False
    rank = len(shape)
    axis = a.get("axis", -2) % rank
    if axis == 0:
        return False  # the batch index is dimension 0's: ONNX's reference needs a dimension before the axis
    length, count = shape[axis], up_shape[axis]
    s_shape, b_shape = [1] * rank, [1] * rank
    s_shape[axis], b_shape[0] = length, shape[0]
    s = e.const(np.arange(length, dtype=np.int64).reshape(s_shape), I64)
    j = e.op("Sub", s, e.op("Reshape", e.op("Cast", where, to=I64), e.const(b_shape, I64))) if where else s
    if text(a.get("mode"), "linear") == "circular":
        j = e.op("Mod", j, e.const(length, I64))
    valid = e.op("And", e.op("Not", e.op("Less", j, e.const(0, I64))), e.op("Less", j, e.const(count, I64)))
    safe = e.op("Expand", e.op("Where", valid, j, e.const(0, I64)), e.const(shape, I64))
    taken = e.op("GatherElements", update, safe, axis=axis)
    e.op("Where", valid, taken, past, out=node.output[0])
    return True


RULES = [
    OpRule(
        ("TensorScatter",),
        lowering="decompose",
        summary="a gather: each cache position takes its update entry (linear or circular) or keeps the past",
        rewrite=_as_gather,
    )
]
