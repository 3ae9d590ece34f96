"""CumSum (TVM's GPU scan: DispatchSortScan picks its implementation for the target)."""

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


RULES = [OpRule(("CumSum",), summary="TVM's GPU scan", torch=_torch_cumsum)]
