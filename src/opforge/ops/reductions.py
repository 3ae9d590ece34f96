"""Sum-like reductions (ReduceSum, ReduceMean, ReduceProd, ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSum,
ReduceLogSumExp): TVM's frontend and DLight's reduction rules (ReduceLogSumExp over trailing axes: opforge's
one-kernel converter); the logarithmic ones draw positive inputs.
ReduceMax/ReduceMin live in reduce_extremes.py."""

from __future__ import annotations

import numpy as np
import onnx

from opforge.ops.base import Emitter, OpRule
from opforge.ops.math_domains import POSITIVE


def _axes(a: dict, consts: dict[int, np.ndarray]) -> list[int] | None:
    """The reduced axes from the node's attributes `a` or its constant axes input; None: every axis."""
    if "axes" in a:
        return list(a["axes"])
    if 1 in consts and np.asarray(consts[1]).size:
        return [int(v) for v in np.asarray(consts[1]).reshape(-1)]
    return [] if a.get("noop_with_empty_axes", 0) else None


# What a reduced axis of static extent 0 is padded with: the reduction's identity, so that the kernel reduces one
# element. TIR runs a reduction's init on the loop's first iteration, so a zero-extent reduction leaves its output
# unwritten; ONNX defines the result over an empty set as the identity (ReduceMean: 0/0 = NaN).
_PAD_IDENTITY = {
    "ReduceSum": 0.0,
    "ReduceSumSquare": 0.0,
    "ReduceL1": 0.0,
    "ReduceL2": 0.0,
    "ReduceLogSum": 0.0,
    "ReduceProd": 1.0,
    "ReduceMean": float("nan"),
    "ReduceMax": float("-inf"),
    "ReduceMin": float("inf"),
    "ReduceLogSumExp": float("-inf"),  # log(sum of no exponentials) = log 0
}


def pad_empty_axes(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """A reduction over an axis of static extent 0: the input padded to extent 1 with the identity on that axis."""
    x = node.input[0]
    vi = e.info(x)  # declared or inferred: a half input's float32 copy (widened) has no declaration once folded
    elem = e.types.get(x) or (vi.type.tensor_type.elem_type if vi is not None else None)
    if vi is None or not elem or node.op_type not in _PAD_IDENTITY or not vi.type.tensor_type.HasField("shape"):
        return False
    dims = vi.type.tensor_type.shape.dim
    if not dims:  # a scalar: no axis to be empty
        return False
    consts = {1: e.initializer(node.input[1])} if len(node.input) > 1 and node.input[1] else {}
    if len(node.input) > 1 and node.input[1] and consts[1] is None:
        return False  # axes given at run time
    axes = _axes(a, {k: v for k, v in consts.items() if v is not None})
    rank = len(dims)
    reduced = range(rank) if axes is None else [ax % rank for ax in axes]
    zero = [ax for ax in reduced if dims[ax].HasField("dim_value") and dims[ax].dim_value == 0]
    if not zero:
        return False
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
    value = _PAD_IDENTITY[node.op_type]
    if dtype.kind in "iu":
        if node.op_type == "ReduceMean":
            return False
        info = np.iinfo(dtype)
        value = info.min if value == float("-inf") else info.max if value == float("inf") else value
    elif dtype.kind != "f" and elem not in (onnx.TensorProto.BFLOAT16,):
        return False
    pads = [0] * (2 * rank)
    for ax in zero:
        pads[rank + ax] = 1
    if e.opset() >= 11:
        padded = e.op("Pad", x, e.const(np.array(pads, np.int64), onnx.TensorProto.INT64), e.const(value, elem))
    else:
        padded = e.op("Pad", x, pads=pads, value=float(value))
    # LogSumExp over a set with no elements is log 0 = -inf: the max of the -inf padding (its own kernel and TVM's
    # would shift the padding by its max, -inf - -inf, and give NaN).
    op = "ReduceMax" if node.op_type == "ReduceLogSumExp" else node.op_type
    e.op(op, padded, *node.input[1:], out=node.output[0], **a)
    return True


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


_SUMMARY = "TVM; an axis of static extent 0 padded with the identity"
RULES = (
    [
        OpRule((op,), summary=_SUMMARY, rewrite=pad_empty_axes, torch=_torch)
        for op in ("ReduceSum", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare")
    ]
    + [
        OpRule((op,), summary=_SUMMARY, rewrite=pad_empty_axes, value_range=POSITIVE, torch=_torch)
        for op in ("ReduceLogSum",)
    ]
    + [
        OpRule(
            ("ReduceLogSumExp",),
            lowering="kernel",
            summary="opforge's converter over trailing axes of a static shape: one kernel (max, sum of exponentials, "
            "log; lower/kernels/logsumexp.py); otherwise TVM",
            rewrite=pad_empty_axes,
            value_range=POSITIVE,
            torch=_torch,
        )
    ]
)
