"""The pools with auto_pad SAME_UPPER/SAME_LOWER: TVM's frontend sizes the padding with the undilated kernel (a
3x3 kernel dilated by 2 pads as a 3x3, not a 5x5: AveragePool over 5x5, stride 2, gives 2x2 where ONNX specifies
ceil(5/2) = 3x3). Where the input's spatial shape is static, opforge writes the padding ONNX specifies as explicit
`pads` before TVM: output = ceil(in / stride), total = max(0, (out - 1) * stride + (k - 1) * d + 1 - in), split
evenly with the odd pixel at the end (SAME_UPPER) or at the beginning (SAME_LOWER). (TVM's Conv gets it right.)

ONNX's reference is itself off for some of these forms (MaxPool SAME_LOWER, dilated SAME pools): the fuzzer
explains those cases by comparing with the reference of the same node with these explicit pads
(testing/fuzz.py KNOWN_EXPLANATIONS)."""

from __future__ import annotations

import math

import onnx
from onnx import helper

from opforge.ops.base import Emitter, OpRule, attrs, text


def same_pads(shape: list[int], kernel: list[int], strides: list[int], dilations: list[int], lower: bool) -> list[int]:
    """ONNX's explicit pads [b1, b2, .., e1, e2, ..] for auto_pad SAME_UPPER (lower=False) or SAME_LOWER."""
    begin, end = [], []
    for n, k, s, d in zip(shape, kernel, strides, dilations):
        out = math.ceil(n / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small, large = total // 2, total - total // 2
        begin.append(large if lower else small)
        end.append(small if lower else large)
    return begin + end


def explicit_pads(node: onnx.NodeProto, shape: list[int]) -> onnx.NodeProto | None:
    """The pool node with auto_pad SAME_* replaced by ONNX's explicit pads, for an input of this static shape
    (None where auto_pad is not SAME_* or the kernel is not known)."""
    a = attrs(node)
    mode = text(a.get("auto_pad"), "NOTSET")
    spatial, kernel = shape[2:], a.get("kernel_shape")
    if mode not in ("SAME_UPPER", "SAME_LOWER") or kernel is None or len(kernel) != len(spatial):
        return None
    strides = list(a.get("strides") or [1] * len(spatial))
    dilations = list(a.get("dilations") or [1] * len(spatial))
    pads = same_pads(spatial, list(kernel), strides, dilations, lower=mode == "SAME_LOWER")
    kept = {k: v for k, v in a.items() if k not in ("auto_pad", "pads", "ceil_mode")}
    return helper.make_node(node.op_type, list(node.input), list(node.output), pads=pads, **kept)


def explicit_pads_rewrite(e: Emitter, node: onnx.NodeProto, _a: dict) -> bool:
    shape = e.static_shape(node.input[0])
    new = explicit_pads(node, shape) if shape is not None and len(shape) >= 3 else None
    if new is None:
        return False
    e.nodes.append(new)
    return True


RULES = [
    OpRule(
        (op,),
        lowering="rewrite",
        summary="TVM; auto_pad SAME_* written as ONNX's explicit pads (TVM sizes them without the dilation)",
        rewrite=explicit_pads_rewrite,
    )
    for op in ("AveragePool", "LpPool")  # MaxPool's rule (max_pool.py) applies this rewrite first
]
