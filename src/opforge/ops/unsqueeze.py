"""Unsqueeze: TVM's converter reads a constant `axes` input as a list and fails on a 0-d one (function bodies such as
AffineGrid's give a scalar -1; ONNX's reference takes it). A 0-d constant axes is its 1-element 1-D form."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule


def _axes_as_list(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    axes = e.initializer(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    if axes is None or axes.ndim != 0:
        return False
    e.op(node.op_type, node.input[0], e.const([int(axes)], TensorProto.INT64), out=node.output[0])
    return True


RULES = [OpRule(("Unsqueeze",), summary="TVM; a 0-d constant axes given as a 1-element list", rewrite=_axes_as_list)]
