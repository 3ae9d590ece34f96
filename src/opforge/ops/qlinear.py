"""QLinearMatMul and QLinearConv (static quantization's integer MatMul and Conv): TensorRT's parser rejects them
and TVM's frontend does not lower them. Written as ONNX's reference computes them: an exact integer product of the
zero-point-shifted operands (MatMulInteger in int32; Conv in float64 as for ConvInteger), scaled by the input scales
over y_scale (computed in the scales' type) in float64, plus y_zero_point, rounded half to even, saturated."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from opforge.ops.base import Emitter, OpRule
from opforge.ops.quantization import _CONV_ATTRS, _shifted

F64, I64 = TensorProto.DOUBLE, TensorProto.INT64
_INTS = (TensorProto.UINT8, TensorProto.INT8)


def _saturate(e: Emitter, y: str, out_type: int, out: str) -> None:
    """Round half to even, clip to the output type's range, cast. Before opset 11 there is no Round and Clip takes
    attributes: the rounding is written with Floor and comparisons (exact on float64)."""
    info = np.iinfo(helper.tensor_dtype_to_np_dtype(out_type))
    if e.opset() >= 11:
        r = e.op("Round", y)
        clipped = e.op("Clip", r, e.const(float(info.min), F64), e.const(float(info.max), F64))
    else:
        half = e.const(0.5, F64)
        r = e.op("Floor", e.op("Add", y, half))
        d = e.op("Sub", r, y)  # 0.5 exactly at a tie
        tie = e.op("Not", e.op("Or", e.op("Less", d, half), e.op("Greater", d, half)))
        two = e.const(2.0, F64)
        odd = e.op("Greater", e.op("Sub", r, e.op("Mul", e.op("Floor", e.op("Div", r, two)), two)), half)
        r = e.op("Sub", r, e.op("Cast", e.op("And", tie, odd), to=F64))
        clipped = e.op("Clip", r, min=float(info.min), max=float(info.max))
    e.op("Cast", clipped, to=out_type, out=out)


def _qlinear_matmul(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    x, xs, xz, w, ws, wz, ys, yz = node.input
    out_type = e.types.get(yz) or e.types.get(x)
    if out_type not in _INTS or e.types.get(x) not in _INTS or e.types.get(w) not in _INTS:
        return False  # float8 forms: not written here
    acc = e.op("MatMulInteger", x, w, xz, wz)
    scale = e.op("Cast", e.op("Div", e.op("Mul", xs, ws), ys), to=F64)
    y = e.op("Add", e.op("Mul", e.op("Cast", acc, to=F64), scale), e.op("Cast", yz, to=F64))
    _saturate(e, y, out_type, node.output[0])
    return True


def _qlinear_conv(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """ONNX's reference: Conv of the shifted operands (+ int32 bias) exact in float64, times x_scale * w_scale /
    y_scale (w_scale per output channel or one), plus y_zero_point, rounded half to even, saturated."""
    x, xs, xz, w, ws, wz, ys, yz = node.input[:8]
    bias = node.input[8] if len(node.input) > 8 and node.input[8] else None
    out_type = e.types.get(yz) or e.types.get(x)
    wv = e.initializer(w)
    rank = e.rank(w) or (wv.ndim if wv is not None else None)
    if out_type not in _INTS or e.types.get(x) not in _INTS or rank is None:
        return False
    conv_attrs = {k: v for k, v in a.items() if k in _CONV_ATTRS}
    acc = e.op("Conv", _shifted(e, x, xz, None), _shifted(e, w, wz, rank), **conv_attrs)
    if bias:
        acc = e.op("Add", acc, e.op("Reshape", e.op("Cast", bias, to=F64), e.const([-1] + [1] * (rank - 2), I64)))
    w_scale = e.op("Reshape", ws, e.const([-1] + [1] * (rank - 2), I64))  # one per output channel, or one
    scale = e.op("Cast", e.op("Div", e.op("Mul", xs, w_scale), ys), to=F64)
    y = e.op("Add", e.op("Mul", acc, scale), e.op("Cast", yz, to=F64))
    _saturate(e, y, out_type, node.output[0])
    return True


RULES = [
    OpRule(
        ("QLinearConv",),
        lowering="decompose",
        summary="8-bit: Conv of the shifted operands exact in float64 (as ConvInteger), requantized as ONNX's "
        "reference does",
        rewrite=_qlinear_conv,
        weights=(3, 5, 8),
    ),
    OpRule(
        ("QLinearMatMul",),
        lowering="decompose",
        summary="8-bit: MatMulInteger (exact int32), requantized in float64 as ONNX's reference does",
        rewrite=_qlinear_matmul,
        weights=(3, 5),
    ),
]
