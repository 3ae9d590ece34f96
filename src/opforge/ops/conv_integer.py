"""ConvInteger (onnxruntime's quantize_dynamic writes one per Conv): TVM's ONNX frontend has no converter, so it
is written as a Conv on the zero-point-shifted operands. The accumulation stays exact: the operands are shifted in
int32 and convolved in float64 (an 8-bit product is below 2^16 and a sum of fewer than 2^37 of them is exact in a
double's 53-bit mantissa), then cast back to int32, the op's output type. Padding contributes zeros after the shift,
as ONNX's reference pads.

The quantized weights (and their zero points) of ConvInteger and MatMulInteger, and a constant DynamicQuantizeLinear
input, stay run-time plugin inputs (`weights`): their values do not become plugin fields, and nodes that differ
only in weights share one plan."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

I32, F64 = TensorProto.INT32, TensorProto.DOUBLE
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def _shifted(e: Emitter, x: str, zero: str | None, channel_axis_rank: int | None) -> str:
    """x - zero in float64 (computed in int32, exact); a per-channel zero point is shaped [M, 1, ...]."""
    v = e.op("Cast", x, to=I32)
    if zero:
        z = e.op("Cast", zero, to=I32)
        if channel_axis_rank is not None:  # weights: a 1-D zero point per output channel broadcasts on axis 0
            z = e.op("Reshape", z, e.const([-1] + [1] * (channel_axis_rank - 1), TensorProto.INT64))
        v = e.op("Sub", v, z)
    return e.op("Cast", v, to=F64)


def _conv_integer(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    x, w = node.input[0], node.input[1]
    x_zero = node.input[2] if len(node.input) > 2 and node.input[2] else None
    w_zero = node.input[3] if len(node.input) > 3 and node.input[3] else None
    rank = e.rank(w) or (len(e.initializer(w).shape) if e.initializer(w) is not None else None)
    if rank is None:
        return False
    xs = _shifted(e, x, x_zero, None)
    ws = _shifted(e, w, w_zero, rank)
    conv_attrs = {k: v for k, v in a.items() if k in _CONV_ATTRS}
    y = e.op("Conv", xs, ws, **conv_attrs)
    e.op("Cast", y, to=I32, out=node.output[0])
    return True


RULES = [
    OpRule(
        ("ConvInteger",),
        lowering="decompose",
        summary="Conv of the zero-point-shifted operands in float64 (exact for 8-bit products), cast to int32; "
        "weights stay run-time inputs",
        rewrite=_conv_integer,
        weights=(1, 3),
    ),
    OpRule(
        ("MatMulInteger",),
        summary="TVM; B and its zero point stay run-time plugin inputs (weights)",
        weights=(1, 3),
    ),
    OpRule(
        ("DynamicQuantizeLinear",),
        summary="TVM; a constant input (weights quantized at run time) stays a run-time plugin input",
        weights=(0,),
    ),
]
