"""CenterCropPad (opset 18): crop or pad each given axis around its centre to the target size."""

from __future__ import annotations

import numpy as np
import onnx

from opforge.ops.base import OpRule


def _torch(torch, node, consts):
    sizes = [int(v) for v in np.asarray(consts[1]).reshape(-1)]
    axes_attr = next((list(onnx.helper.get_attribute_value(x)) for x in node.attribute if x.name == "axes"), None)

    def f(x, _shape):
        axes = [a % x.dim() for a in (axes_attr if axes_attr is not None else range(x.dim()))]
        for ax, size in zip(axes, sizes):
            n = x.shape[ax]
            if size < n:  # crop: ONNX starts at (n - size) // 2
                x = x.narrow(ax, (n - size) // 2, size)
            elif size > n:  # pad: ONNX puts (size - n) // 2 before
                before = (size - n) // 2
                pad = [0, 0] * (x.dim() - 1 - ax) + [before, size - n - before]
                x = torch.nn.functional.pad(x, pad)
        return x.contiguous()  # a new tensor, as the ONNX op gives (a crop alone would be a view)

    return f


RULES = [OpRule(("CenterCropPad",), summary="TVM", torch=_torch)]
