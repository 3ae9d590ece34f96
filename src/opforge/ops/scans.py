"""CumSum: along the last axis of a static shape, opforge's chunked block scan (lower/kernels/scan.py, installed as
the ONNX converter in lower/tvm_converters.py: three launches, exclusive and reverse in its index map); other axes
and symbolic shapes, TVM's GPU scan (DispatchSortScan: one launch per level of an up/down sweep)."""

from __future__ import annotations

import numpy as np
import onnx

from opforge.ops.base import OpRule


def _torch_cumsum(torch, node, consts):
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    exclusive, reverse = a.get("exclusive", 0), a.get("reverse", 0)
    axis = int(np.asarray(consts[1]).reshape(-1)[0])

    def f(x, _axis):
        y = torch.flip(x, [axis]) if reverse else x
        out = torch.cumsum(y, dim=axis)
        if exclusive:
            out = out - y
        return torch.flip(out, [axis]) if reverse else out

    return f


RULES = [
    OpRule(
        ("CumSum",),
        lowering="kernel",
        summary="opforge's chunked block scan along a static last axis (lower/kernels/scan.py); TVM's scan otherwise",
        torch=_torch_cumsum,
    )
]
