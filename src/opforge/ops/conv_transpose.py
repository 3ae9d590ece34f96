"""ConvTranspose with `output_shape`: TVM's frontend ignores the attribute. ONNX's spec derives pads from it:
total_padding = stride * (in - 1) + output_padding + ((kernel - 1) * dilation + 1) - output_shape, split begin/end
(NOTSET/SAME_LOWER: begin = total - total // 2; SAME_UPPER: begin = total // 2). ONNX's reference instead keeps
pads 0 and writes an output of output_shape; the two agree when total_padding is 0 (output_shape is the default
size: the attribute is dropped) or -1 (one extra row at the end: output_padding + 1). Other values are refused:
the spec and the reference disagree on them."""

from __future__ import annotations

import onnx

from opforge.ops.base import Emitter, OpRule, text


def _totals(e: Emitter, node: onnx.NodeProto, a: dict) -> list[int] | None:
    """Per spatial axis, the spec's total padding, or None when shapes or attributes do not allow it."""
    x_shape = e.static_shape(node.input[0])
    w = e.initializer(node.input[1])
    w_shape = list(w.shape) if w is not None else e.static_shape(node.input[1])
    if x_shape is None or w_shape is None or "output_shape" not in a or any(a.get("pads", [])):
        return None
    nd = len(x_shape) - 2
    kernel = list(a.get("kernel_shape", w_shape[2:]))
    strides = list(a.get("strides", [1] * nd))
    dilations = list(a.get("dilations", [1] * nd))
    out_pad = list(a.get("output_padding", [0] * nd))
    out_shape = list(a["output_shape"])[-nd:]
    if len(out_shape) != nd or len(kernel) != nd:
        return None
    return [
        strides[i] * (x_shape[i + 2] - 1) + out_pad[i] + ((kernel[i] - 1) * dilations[i] + 1) - out_shape[i]
        for i in range(nd)
    ]


def _without_output_shape(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """output_shape as the default size (dropped) or one more at the end (output_padding + 1, kept below the
    stride or dilation as ONNX's output_padding must be)."""
    if text(a.get("auto_pad"), "NOTSET") != "NOTSET":
        return False
    totals = _totals(e, node, a)
    if totals is None or any(t not in (0, -1) for t in totals):
        return False
    nd = len(totals)
    strides, dilations = list(a.get("strides", [1] * nd)), list(a.get("dilations", [1] * nd))
    out_pad = [p - t for p, t in zip(a.get("output_padding", [0] * nd), totals)]
    if any(p >= max(s, d) for p, s, d in zip(out_pad, strides, dilations)):
        return False
    kept = {k: v for k, v in a.items() if k not in ("output_shape", "output_padding", "pads")}
    if any(out_pad):
        kept["output_padding"] = out_pad
    e.op("ConvTranspose", *node.input, out=node.output[0], **kept)
    return True


def _refuse(node: onnx.NodeProto, a: dict) -> str | None:
    if "output_shape" in a:
        return (
            "ConvTranspose output_shape other than the default size or one more (ONNX's spec and reference "
            "disagree there; give pads instead)"
        )
    return None


RULES = [
    OpRule(
        ("ConvTranspose",),
        summary="TVM; output_shape of the default size or one more written as output_padding, others refused",
        rewrite=_without_output_shape,
        refuse=_refuse,
    )
]
