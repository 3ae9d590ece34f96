"""ReduceMax / ReduceMin: float reductions start from -inf/+inf (opforge's kernel, TVM starts from the dtype's
lowest finite value); bool ones go through uint8 (TVM has no extreme values for bool)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule
from opforge.ops.reductions import pad_empty_axes


def _bool_reduce(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """Through uint8, whose identities 0 and 255 give ONNX's False and True over an empty set."""
    if e.types.get(node.input[0]) != TensorProto.BOOL:
        return pad_empty_axes(e, node, a)
    x = e.op("Cast", node.input[0], to=TensorProto.UINT8)
    reduced = e.op(node.op_type, x, *node.input[1:], **a)
    e.op("Cast", reduced, to=TensorProto.BOOL, out=node.output[0])
    return True


def _axes(node: onnx.NodeProto, consts: dict[int, np.ndarray]) -> tuple[list[int] | None, bool]:
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    axes = list(a["axes"]) if "axes" in a else ([int(v) for v in consts[1].reshape(-1)] if 1 in consts else None)
    return axes, bool(a.get("keepdims", 1))


def _torch_max(torch, node, consts):
    axes, keep = _axes(node, consts)
    return lambda x, *_: torch.amax(x, dim=axes if axes is not None else list(range(x.dim())), keepdim=keep)


def _torch_min(torch, node, consts):
    axes, keep = _axes(node, consts)
    return lambda x, *_: torch.amin(x, dim=axes if axes is not None else list(range(x.dim())), keepdim=keep)


_KERNELS = {
    "relax.max": "opforge.lower.kernels.reductions:override_max",
    "relax.min": "opforge.lower.kernels.reductions:override_min",
}

RULES = [
    OpRule(
        ("ReduceMax",),
        lowering="kernel",
        summary="float: opforge's reduction from -inf (lower/kernels/reductions.py); bool: through uint8",
        rewrite=_bool_reduce,
        kernels=_KERNELS,
        torch=_torch_max,
    ),
    OpRule(
        ("ReduceMin",),
        lowering="kernel",
        summary="float: opforge's reduction from +inf (lower/kernels/reductions.py); bool: through uint8",
        rewrite=_bool_reduce,
        kernels=_KERNELS,
        torch=_torch_min,
    ),
]
