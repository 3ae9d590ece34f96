"""BitShift and the bitwise ops (TensorRT's parser rejects them all; TVM's frontend converts them).

BitShift's input domain: a shift by the type's bit width or more (or by a negative amount) is undefined in C and
CUDA, and NumPy (ONNX's reference) gives its own answer there; the op's meaningful domain is shift amounts in
[0, bits). Found by the fuzzer (testing/fuzz.py): amounts drawn in [-100, 100] disagreed with TVM on the CPU."""

from __future__ import annotations

import numpy as np
import onnx

from opforge.ops.base import InputDomain, OpRule, text


def _amounts(d: InputDomain) -> None:
    x, y = d.value(0), d.value(1)
    if x is None or y is None or not d.free(1):
        return
    bits = np.iinfo(y.dtype).bits if np.issubdtype(y.dtype, np.integer) else 8
    d.values[d.node.input[1]] = d.rng.integers(0, bits, size=y.shape).astype(y.dtype)
    if np.issubdtype(x.dtype, np.unsignedinteger) and d.free(0):
        info = np.iinfo(x.dtype)
        d.values[d.node.input[0]] = d.rng.integers(0, info.max, size=x.shape, endpoint=True).astype(x.dtype)


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
    OpRule(("BitShift",), summary="TVM; shift amounts drawn in [0, bits)", inputs=_amounts, torch=_torch_shift),
    OpRule(("BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot"), summary="TVM", torch=_torch_bitwise),
]
