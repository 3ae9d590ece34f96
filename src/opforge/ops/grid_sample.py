"""GridSample (TVM's frontend): the PyTorch counterpart is F.grid_sample with the same mode, padding and corner
alignment (ONNX's linear/cubic of opset 20 are PyTorch's bilinear/bicubic)."""

from __future__ import annotations

import onnx

from opforge.ops.base import OpRule, text


def _torch(torch, node, consts):
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    mode = {"linear": "bilinear", "cubic": "bicubic"}.get(text(a.get("mode"), "linear"), text(a.get("mode")))
    padding = text(a.get("padding_mode"), "zeros")
    corners = bool(a.get("align_corners", 0))
    return lambda x, grid: torch.nn.functional.grid_sample(
        x, grid, mode=mode, padding_mode=padding, align_corners=corners
    )


RULES = [OpRule(("GridSample",), summary="TVM", torch=_torch)]
