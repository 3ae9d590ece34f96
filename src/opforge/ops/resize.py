"""Resize (and Upsample, which TVM imports as the same Relax op).

- Refused: antialias=1 (TVM's frontend ignores antialiasing).
- Rewritten: `axes` and `keep_aspect_ratio_policy` (TVM's frontend takes neither) become scales or sizes for every
  axis, when they are constants.
- Kernel: opforge's NCHW nearest/linear Resize (lower/kernels/resize.py: a shared-memory column table, columns
  reused across a thread's outputs and rows, 16-byte stores, ONNX's coordinate and rounding rules); other modes
  and layouts go to TVM's own legalization.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule, text


def _refuse(node: onnx.NodeProto, a: dict) -> str | None:
    return "Resize antialias=1: TVM's frontend ignores antialiasing" if a.get("antialias", 0) else None


def _full_rank(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """Axes left out keep scale 1 and the full roi; a policy fixes one scale for the given axes and the sizes it
    yields (ONNX: round(scale * input size))."""
    policy = text(a.get("keep_aspect_ratio_policy"), "stretch")
    rank = e.rank(node.input[0])
    if ("axes" not in a and policy == "stretch") or rank is None:
        return False

    def const(pos: int) -> np.ndarray | None:
        return e.initializer(node.input[pos]) if len(node.input) > pos and node.input[pos] else None

    axes = [x % rank for x in a.get("axes", range(rank))]
    roi, scales, sizes = const(1), const(2), const(3)
    if (scales is None) == (sizes is None):
        return False
    in_shape = e.static_shape(node.input[0])
    if scales is None and in_shape is None:
        return False
    new_inputs = [node.input[0], "", "", ""]
    if roi is not None and roi.size:
        full = np.array([0.0] * rank + [1.0] * rank, roi.dtype)
        for k, ax in enumerate(axes):
            full[ax], full[rank + ax] = roi[k], roi[len(axes) + k]
        new_inputs[1] = e.const(full, onnx.helper.np_dtype_to_tensor_dtype(roi.dtype))
    if scales is not None:
        full = np.ones(rank, scales.dtype)
        full[axes] = scales
        new_inputs[2] = e.const(full, onnx.helper.np_dtype_to_tensor_dtype(scales.dtype))
    else:
        full = np.array(in_shape, np.int64)
        if policy == "stretch":
            full[axes] = sizes
        else:
            ratios = [sizes[k] / in_shape[ax] for k, ax in enumerate(axes)]
            scale = min(ratios) if policy == "not_larger" else max(ratios)
            for ax in axes:
                full[ax] = int(np.floor(scale * in_shape[ax] + 0.5))
        new_inputs[3] = e.const(full, TensorProto.INT64)
    while new_inputs and not new_inputs[-1]:
        new_inputs.pop()
    kept = {k: v for k, v in a.items() if k not in ("axes", "keep_aspect_ratio_policy")}
    e.op("Resize", *new_inputs, out=node.output[0], **kept)
    return True


def _torch(torch, node: onnx.NodeProto, consts: dict[int, np.ndarray]):
    """Half-pixel nearest (round_prefer_floor) or linear, NCHW, given sizes or scales (ONNX's defaults)."""
    import torch.nn.functional as F

    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    mode = text(a.get("mode"), "nearest")
    sizes = consts.get(3)
    scales = consts.get(2)

    def out_hw(x):
        if sizes is not None and sizes.size:
            return [int(s) for s in sizes[-2:]]
        return [int(np.floor(x.shape[k + 2] * float(scales[k + 2]))) for k in range(2)]

    if mode == "linear":
        return lambda x, *_: F.interpolate(x, size=out_hw(x), mode="bilinear", align_corners=False)

    def nearest(x, *_):
        oh, ow = out_hw(x)

        def table(n_in, n_out):
            # ONNX half_pixel + round_prefer_floor: the source index of each output index
            src = (torch.arange(n_out, device=x.device, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
            return torch.clamp(torch.ceil(src - 0.5), 0, n_in - 1).long()

        return x[:, :, table(x.shape[2], oh)[:, None], table(x.shape[3], ow)[None, :]]

    return nearest


_KERNEL = {"relax.image.resize2d": "opforge.lower.kernels.resize:override"}

RULES = [
    OpRule(
        ("Resize",),
        lowering="kernel",
        summary="opforge's NCHW nearest/linear kernel (lower/kernels/resize.py); axes/aspect policy made full-rank; "
        "antialias refused",
        refuse=_refuse,
        rewrite=_full_rank,
        kernels=_KERNEL,
        torch=_torch,
    ),
    OpRule(("Upsample",), summary="TVM, through opforge's Resize kernel where it applies", kernels=_KERNEL),
]
