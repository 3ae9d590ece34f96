"""DeformConv (2-D): TVM's ONNX frontend has no converter. With static shapes it is the definition written in ONNX
ops, as ONNX's reference computes it: each kernel tap of each output pixel samples the input at its grid position
plus its learned offset, bilinearly with zeros outside (GridSample, align_corners=1, the position normalised by
H-1 and W-1 as the reference does), times the mask; the samples of a group form the columns that one batched
MatMul with the reshaped weights turns into the output, plus the bias. Refused: other than 2-D, and inputs one
pixel high or wide (the normalisation divides by zero)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

I64 = TensorProto.INT64


def _deform_conv(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    x, w, offset = node.input[:3]
    bias = node.input[3] if len(node.input) > 3 else ""
    mask = node.input[4] if len(node.input) > 4 else ""
    xs, ws, os_ = e.static_shape(x), e.static_shape(w), e.static_shape(offset)
    if xs is None or ws is None or os_ is None or len(xs) != 4 or len(ws) != 4:
        return False
    n, c, h, wd = xs
    oc = ws[0]
    kh, kw = a.get("kernel_shape", ws[2:])
    dh, dw = a.get("dilations", [1, 1])
    sh, sw = a.get("strides", [1, 1])
    pt, pl = a.get("pads", [0, 0, 0, 0])[:2]
    group, off_group = a.get("group", 1), a.get("offset_group", 1)
    oh, ow = os_[2:]
    if h < 2 or wd < 2 or c % off_group or c % group or oc % group:
        return False
    taps, pixels = kh * kw, oh * ow
    ki, kj = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    oi, oj = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
    base_h = (-pt + sh * oi.reshape(1, -1) + dh * ki.reshape(-1, 1)).astype(np.float64)  # [taps, pixels]
    base_w = (-pl + sw * oj.reshape(1, -1) + dw * kj.reshape(-1, 1)).astype(np.float64)
    off = e.op("Reshape", offset, e.const([n, off_group, taps, 2, pixels], I64))
    ys = e.op("Add", e.op("Gather", off, e.const(0, I64), axis=3), e.const(base_h))  # [N, G, taps, pixels]
    xs_ = e.op("Add", e.op("Gather", off, e.const(1, I64), axis=3), e.const(base_w))

    def normalised(v: str, size: int) -> str:
        return e.op("Sub", e.op("Mul", e.op("Div", v, e.const(size - 1.0)), e.const(2.0)), e.const(1.0))

    grid = e.op("Concat", e.unsqueeze(normalised(xs_, wd), [4]), e.unsqueeze(normalised(ys, h), [4]), axis=4)
    grid = e.op("Reshape", grid, e.const([n * off_group, taps, pixels, 2], I64))
    xg = e.op("Reshape", x, e.const([n * off_group, c // off_group, h, wd], I64))
    mode = "linear" if e.opset() >= 20 else "bilinear"
    sampled = e.op("GridSample", xg, grid, align_corners=1, mode=mode, padding_mode="zeros")  # [N*G, Cg, taps, P]
    if mask:
        m = e.op("Reshape", mask, e.const([n * off_group, 1, taps, pixels], I64))
        sampled = e.op("Mul", sampled, m)
    k = c // group * taps
    cols = e.op("Reshape", sampled, e.const([n, group, k, pixels], I64))
    wm = e.op("Reshape", w, e.const([group, oc // group, k], I64))
    out = e.op("MatMul", wm, cols)  # [N, group, oc/group, P]
    out = e.op("Reshape", out, e.const([n, oc, oh, ow], I64))
    if bias:
        out = e.op("Add", out, e.op("Reshape", bias, e.const([1, oc, 1, 1], I64)))
    e.op("Identity", out, out=node.output[0])
    return True


RULES = [
    OpRule(
        ("DeformConv",),
        lowering="decompose",
        summary="2-D, static shapes: offset taps sampled by GridSample (align_corners, zeros), masked, then a "
        "grouped MatMul with the weights",
        rewrite=_deform_conv,
    )
]
