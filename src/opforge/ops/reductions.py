"""Sum-like reductions (ReduceSum, ReduceMean, ReduceProd, ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSum,
ReduceLogSumExp): TVM's frontend and DLight's reduction rules; the logarithmic ones draw positive inputs.
ReduceMax/ReduceMin live in reduce_extremes.py."""

from __future__ import annotations

import numpy as np
import onnx

from opforge.ops.base import OpRule
from opforge.ops.math_domains import POSITIVE


def _axes(a: dict, consts: dict[int, np.ndarray]) -> list[int] | None:
    """The reduced axes from the node's attributes `a` or its constant axes input; None: every axis."""
    if "axes" in a:
        return list(a["axes"])
    if 1 in consts and np.asarray(consts[1]).size:
        return [int(v) for v in np.asarray(consts[1]).reshape(-1)]
    return [] if a.get("noop_with_empty_axes", 0) else None


def _torch(torch, node, consts):
    """Attributes and constant axes are read here, once: the returned function is plain tensor code (torch.compile
    traces it)."""
    op = node.op_type
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    given, keep = _axes(a, consts), bool(a.get("keepdims", 1))

    def f(x, *_axes_input):
        axes = given if given is not None else list(range(x.dim()))
        if not axes:
            return x
        if op == "ReduceSum":
            return torch.sum(x, dim=axes, keepdim=keep)
        if op == "ReduceMean":
            return torch.mean(x, dim=axes, keepdim=keep)
        if op == "ReduceProd":
            out = x
            for ax in sorted((ax % x.dim() for ax in axes), reverse=True):
                out = torch.prod(out, dim=ax, keepdim=keep)
            return out
        if op == "ReduceL1":
            return torch.sum(torch.abs(x), dim=axes, keepdim=keep)
        if op == "ReduceL2":
            return torch.linalg.vector_norm(x, 2, dim=axes, keepdim=keep)
        if op == "ReduceSumSquare":
            return torch.sum(x * x, dim=axes, keepdim=keep)
        if op == "ReduceLogSum":
            return torch.log(torch.sum(x, dim=axes, keepdim=keep))
        return torch.logsumexp(x, dim=axes, keepdim=keep)

    return f


RULES = [
    OpRule((op,), summary="TVM", torch=_torch)
    for op in ("ReduceSum", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare")
] + [OpRule((op,), summary="TVM", value_range=POSITIVE, torch=_torch) for op in ("ReduceLogSum", "ReduceLogSumExp")]
