"""Elementwise float ops that chains are made of: TVM's frontend as is. Only their PyTorch counterparts live here
(for the benchmarks' chains)."""

from __future__ import annotations

import onnx

from opforge.ops.base import OpRule, text

_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Neg": "neg", "Abs": "abs", "Erf": "erf"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul"}


def _torch(torch, node, consts):
    if node.op_type in _UNARY:
        return getattr(torch, _UNARY[node.op_type])
    if node.op_type in _BINARY:
        return getattr(torch, _BINARY[node.op_type])
    if node.op_type == "Div":
        return lambda x, y: x / y  # float division (integer Div truncates in ONNX: not covered here)
    approximate = text(
        next((onnx.helper.get_attribute_value(x) for x in node.attribute if x.name == "approximate"), None), "none"
    )
    return lambda x: torch.nn.functional.gelu(x, approximate=approximate)


RULES = [OpRule((op,), summary="TVM", torch=_torch) for op in (*_UNARY, *_BINARY, "Div", "Gelu")]
