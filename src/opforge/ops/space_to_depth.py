"""SpaceToDepth: TVM's frontend implements mode DCR only (it ignores the attribute). Mode CRD is written as ONNX
defines it: Reshape to [N, C, H/b, b, W/b, b], Transpose [0, 1, 3, 5, 2, 4], Reshape to [N, C*b*b, H/b, W/b]
(a pure data movement, exact)."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule, text

I64 = TensorProto.INT64


def _crd(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """Mode CRD as Reshape/Transpose/Reshape (needs the input's static shape); DCR stays with TVM."""
    if text(a.get("mode"), "DCR") != "CRD":
        return False
    shape = e.static_shape(node.input[0])
    b = int(a.get("blocksize", 0))
    if shape is None or len(shape) != 4 or b <= 0:
        return False
    n, c, h, w = shape
    blocks = e.op("Reshape", node.input[0], e.const([n, c, h // b, b, w // b, b], I64))
    moved = e.op("Transpose", blocks, perm=[0, 1, 3, 5, 2, 4])
    e.op("Reshape", moved, e.const([n, c * b * b, h // b, w // b], I64), out=node.output[0])
    return True


def _refuse(node: onnx.NodeProto, a: dict) -> str | None:
    """CRD that the rewrite could not write (input shape unknown) would be computed as DCR by TVM."""
    if text(a.get("mode"), "DCR") == "CRD":
        return "SpaceToDepth mode CRD without a static input shape: TVM's frontend ignores the mode attribute"
    return None


RULES = [
    OpRule(
        ("SpaceToDepth",),
        summary="TVM (DCR); mode CRD as Reshape/Transpose/Reshape",
        rewrite=_crd,
        refuse=_refuse,
    )
]
