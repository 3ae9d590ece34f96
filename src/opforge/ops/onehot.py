"""OneHot: TVM's frontend wants depth and values constant; with run-time values it is decomposed."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, InputDomain, OpRule


def _onehot(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """On where the index, made non-negative by adding depth, equals the class along `axis`, off elsewhere
    (out-of-range indices match none)."""
    indices, depth, values = node.input
    if values in e.constants:
        return False  # TVM's own OneHot
    rank = e.rank(indices)
    axis = a.get("axis", -1)
    axis = axis + rank + 1 if axis < 0 else axis
    i64 = TensorProto.INT64
    n = e.op("Cast", e.op("Reshape", depth, e.const([], i64)), to=i64)  # depth: a scalar or one element
    idx = e.op("Cast", indices, to=i64)
    idx = e.op("Where", e.op("Less", idx, e.const(0, i64)), e.op("Add", idx, n), idx)
    # The classes along `axis`, against the indices with a unit dimension there.
    classes = e.op(
        "Reshape", e.op("Range", e.const(0, i64), n, e.const(1, i64)), e.const([-1] + [1] * (rank - axis), i64)
    )
    new_axis = {"axes": [axis]} if e.opset() < 13 else {}  # an input from opset 13
    idx = e.op("Unsqueeze", idx, *([] if new_axis else [e.const([axis], i64)]), **new_axis)
    on, off = (e.op("Gather", values, e.const(k, i64)) for k in (1, 0))
    e.op("Where", e.op("Equal", idx, classes), on, off, out=node.output[0])
    return True


def _indices(d: InputDomain) -> None:
    """Indices in [-depth, depth): every one selects a class."""
    name = d.free(0)
    depth = d.value(1)
    if name and depth is not None:
        depth = int(np.asarray(depth).reshape(-1)[0])
        d.values[name] = d.rng.integers(-depth, depth, size=d.values[name].shape).astype(d.values[name].dtype)


def _torch(torch, node: onnx.NodeProto, consts: dict[int, np.ndarray]):
    depth = int(np.asarray(consts[1]).reshape(-1)[0])
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)

    def f(idx, _depth, values):
        cols = torch.arange(depth, device=idx.device)
        idx = torch.where(idx < 0, idx + depth, idx)
        out = torch.where(idx.unsqueeze(-1) == cols, values[1], values[0])
        return out if axis in (-1, idx.dim()) else out.movedim(-1, axis)

    return f


RULES = [
    OpRule(
        ("OneHot",),
        lowering="rewrite",
        summary="TVM with constant values; run-time values as Where(Equal(index, class), on, off)",
        rewrite=_onehot,
        inputs=_indices,
        torch=_torch,
    )
]
