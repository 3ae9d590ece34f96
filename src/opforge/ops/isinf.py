"""IsInf: TVM's frontend ignores detect_positive/detect_negative; one-sided forms become an Equal with +inf/-inf."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from opforge.ops.base import Emitter, OpRule


def _isinf_by_sign(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    pos, neg = a.get("detect_positive", 1), a.get("detect_negative", 1)
    if pos and neg:
        return False
    elem = e.types.get(node.input[0], TensorProto.FLOAT)
    value = np.inf if pos else -np.inf
    if not (pos or neg):
        value = np.nan  # NaN equals nothing: all false, as ONNX says
    inf = e.const(np.array(value, dtype=helper.tensor_dtype_to_np_dtype(elem)), elem)
    e.op("Equal", node.input[0], inf, out=node.output[0])
    return True


RULES = [
    OpRule(
        ("IsInf",),
        lowering="rewrite",
        summary="TVM; one-sided detection as Equal(x, +inf or -inf)",
        rewrite=_isinf_by_sign,
    )
]
