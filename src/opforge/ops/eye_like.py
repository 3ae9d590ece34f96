"""EyeLike: TVM's frontend refuses a `dtype` attribute other than the input's type. EyeLike reads only its input's
shape, so EyeLike(Cast(x, dtype)) without the attribute is the same op."""

from __future__ import annotations

import onnx

from opforge.ops.base import Emitter, OpRule


def _dtype_by_cast(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    dtype, elem = a.get("dtype"), e.types.get(node.input[0])
    if dtype is None or elem is None or dtype == elem:
        return False
    kept = {k: v for k, v in a.items() if k != "dtype"}
    e.op("EyeLike", e.op("Cast", node.input[0], to=dtype), out=node.output[0], **kept)
    return True


RULES = [OpRule(("EyeLike",), summary="TVM; a dtype other than the input's through a Cast", rewrite=_dtype_by_cast)]
