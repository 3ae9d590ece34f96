"""Softmax, LogSoftmax (opset 13: along one axis)."""

from __future__ import annotations

import onnx

from opforge.ops.base import OpRule


def _torch(torch, node, consts):
    axis = next((onnx.helper.get_attribute_value(x) for x in node.attribute if x.name == "axis"), -1)
    f = torch.softmax if node.op_type == "Softmax" else torch.log_softmax
    return lambda x: f(x, dim=axis)


RULES = [OpRule(("Softmax", "LogSoftmax"), summary="TVM", torch=_torch)]
