"""BitShift and the bitwise ops (TensorRT's parser rejects them all; TVM's frontend converts them)."""

from __future__ import annotations

import onnx

from opforge.ops.base import OpRule, text


def _torch_shift(torch, node, consts):
    direction = text(next(onnx.helper.get_attribute_value(x) for x in node.attribute if x.name == "direction"))
    return torch.bitwise_left_shift if direction == "LEFT" else torch.bitwise_right_shift


def _torch_bitwise(torch, node, consts):
    return {
        "BitwiseAnd": torch.bitwise_and,
        "BitwiseOr": torch.bitwise_or,
        "BitwiseXor": torch.bitwise_xor,
        "BitwiseNot": torch.bitwise_not,
    }[node.op_type]


RULES = [
    OpRule(("BitShift",), summary="TVM", torch=_torch_shift),
    OpRule(("BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot"), summary="TVM", torch=_torch_bitwise),
]
