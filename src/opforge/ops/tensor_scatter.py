"""TensorScatter (opset 24): TVM's ONNX frontend has no converter. With static shapes it is a select per cache
position p along `axis`: the update entry j = p - write_indices[b] (mod the cache length in circular mode) when
0 <= j < the update's length, else the past value; one GatherElements of the update and a Where. Exact (moves
values only). The update must not be longer than the cache (then no position is written twice)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, InputDomain, OpRule, text

I64 = TensorProto.INT64


def _refuse(node: onnx.NodeProto, a: dict) -> str | None:
    mode = text(a.get("mode"), "linear")
    return None if mode in ("linear", "circular") else f"TensorScatter mode {mode!r} is not an ONNX mode"


def _tensor_scatter(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    past, update = node.input[:2]
    write = node.input[2] if len(node.input) > 2 else ""
    shape, ushape = e.static_shape(past), e.static_shape(update)
    if shape is None or ushape is None or len(shape) != len(ushape) or len(shape) < 2:
        return False
    rank = len(shape)
    axis = a.get("axis", -2) % rank
    if axis == 0 or ushape[axis] > shape[axis]:
        return False
    length, seq = shape[axis], ushape[axis]
    pos = np.arange(length).reshape([length if d == axis else 1 for d in range(rank)])
    p = e.const(pos, I64)
    if write:
        w = e.op("Reshape", e.op("Cast", write, to=I64), e.const([shape[0]] + [1] * (rank - 1), I64))
        j = e.op("Sub", p, w)
    else:
        j = p
    if text(a.get("mode"), "linear") == "circular":
        j = e.op("Mod", j, e.const(length, I64))
    valid = e.op("And", e.op("GreaterOrEqual", j, e.const(0, I64)), e.op("Less", j, e.const(seq, I64)))
    index_shape = [length if d == axis else s for d, s in enumerate(ushape)]
    idx = e.op("Expand", e.op("Where", valid, j, e.const(0, I64)), e.const(index_shape, I64))
    taken = e.op("GatherElements", update, idx, axis=axis)
    e.op("Where", e.op("Expand", valid, e.const(shape, I64)), taken, past, out=node.output[0])
    return True


def _inputs(d: InputDomain) -> None:
    """write_indices drawn so the update fits the cache (linear) or anywhere in it (circular)."""
    name = d.free(2)
    if not name:
        return
    axis = d.a.get("axis", -2) % len(d.shape(0))
    room = d.shape(0)[axis] - (d.shape(1)[axis] if text(d.a.get("mode"), "linear") == "linear" else 1)
    v = d.values[name]
    d.values[name] = d.rng.integers(0, max(room, 0) + 1, size=v.shape).astype(v.dtype)


RULES = [
    OpRule(
        ("TensorScatter",),
        lowering="decompose",
        summary="static shapes: GatherElements of the update at each cache position, Where it is written",
        rewrite=_tensor_scatter,
        refuse=_refuse,
        inputs=_inputs,
    )
]
