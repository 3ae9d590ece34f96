"""Compress: with a constant condition it selects fixed positions, a Gather with a constant index table. With a
run-time condition the selected extent is data-dependent: opforge's kernel (opforge.lower.kernels.data_dependent)
writes the output densely and the extent into a size tensor (IExprBuilder::declareSizeTensor)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule, torch_device


def _compress_to_gather(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    cond = e.initializer(node.input[1]) if len(node.input) >= 2 else None
    if cond is None:
        return False
    x, axis = node.input[0], a.get("axis")
    idx = e.const(np.flatnonzero(cond.astype(bool)).astype(np.int64), TensorProto.INT64)
    if axis is None:  # Compress flattens first
        x, axis = e.op("Reshape", x, e.const([-1], TensorProto.INT64)), 0
    e.op("Gather", x, idx, axis=axis, out=node.output[0])
    return True


def _torch(torch, node, consts):
    axis = next((a.i for a in node.attribute if a.name == "axis"), None)
    # The kept positions of the constant condition, on the device once (no copy while timed).
    idx = torch.as_tensor(np.flatnonzero(np.asarray(consts[1]).astype(bool)), device=torch_device(torch))

    def f(x, _condition):
        return torch.index_select(x.reshape(-1) if axis is None else x, 0 if axis is None else axis, idx)

    return f


RULES = [
    OpRule(
        ("Compress",),
        lowering="rewrite",
        summary="constant condition: Gather of the selected positions; run-time condition: opforge's kernel with a "
        "size tensor (data-dependent shape)",
        rewrite=_compress_to_gather,
        torch=_torch,
        data_dependent=lambda node, constants: len(node.input) < 2 or node.input[1] not in constants,
    )
]
