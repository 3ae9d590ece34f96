"""ConvInteger (onnxruntime's quantize_dynamic writes one per Conv): TVM's ONNX frontend has no converter, so it
is written as a Conv on the zero-point-shifted operands. The accumulation stays exact: the operands are shifted in
int32 and convolved in float64 (an 8-bit product is below 2^16 and a sum of fewer than 2^37 of them is exact in a
double's 53-bit mantissa), then cast back to int32, the op's output type. Padding contributes zeros after the shift,
as ONNX's reference pads.

Blocked QuantizeLinear/DequantizeLinear (block_size > 0, integer types), which TVM's frontend does not import, are
written as ONNX's reference computes them: scale and zero point repeated block_size times along the axis (a Gather
of i // block_size), then DequantizeLinear = (float32(x) - float32(zero point)) * scale in float32, cast to the
output type; QuantizeLinear = x / scale rounded half to even, plus the zero point, clipped to the type's range.

The quantized weights (and their zero points) of ConvInteger and MatMulInteger, and a constant DynamicQuantizeLinear
input, stay run-time plugin inputs (`weights`): their values do not become plugin fields, and nodes that differ
only in weights share one plan."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

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


def _torch_dql(torch, node, consts):
    """ONNX's definition: scale = (max(0, max x) - min(0, min x)) / 255, zero point = saturate(round(-min / scale)),
    y = saturate(round(x / scale) + zero point); rounding half to even (torch.round)."""

    def f(x):
        xf = x.float()
        lo = torch.clamp(xf.min(), max=0.0)
        hi = torch.clamp(xf.max(), min=0.0)

        # The float32 quotients ONNX defines, computed in float64 and rounded once (exact: a float64 quotient of
        # float32 operands rounds to the correctly rounded float32 one). PyTorch divides by a Python scalar through
        # its reciprocal and torch.compile's Triton divides approximately: both one ulp off on some elements, which
        # then round to the other integer (31 of 4M outputs).
        def div(a, b):
            return (a.double() / b.double()).float()

        scale = div(hi - lo, torch.full((), 255.0, device=x.device))
        zp = torch.clamp(torch.round(div(-lo, scale)), 0, 255)
        y = torch.clamp(torch.round(div(xf, scale)) + zp, 0, 255)
        return y.to(torch.uint8), scale, zp.to(torch.uint8)

    return f


def _torch_matmul_integer(torch, node, consts):
    """Exact: the shifted operands multiplied in float64 (8-bit products summed over K stay far below 2^53)."""

    def f(a, b, a_zero=None, b_zero=None):
        af = a.double() - (a_zero.double() if a_zero is not None else 0.0)
        bf = b.double() - (b_zero.double() if b_zero is not None else 0.0)
        return torch.matmul(af, bf).to(torch.int32)

    return f


_INTEGER_TYPES = (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32)
F32 = TensorProto.FLOAT


def _blocks_repeated(e: Emitter, v: str, axis: int, n: int, block: int) -> str:
    """A blocked scale or zero point with each entry repeated `block` times along `axis` (n: x's extent there)."""
    return e.op("Gather", v, e.const(np.arange(n, dtype=np.int64) // block, TensorProto.INT64), axis=axis)


def _blocked_setup(e: Emitter, node: onnx.NodeProto, a: dict) -> tuple[int, int, int] | None:
    """(axis, x's extent on it, block size) for a blocked node whose input rank and shape are known."""
    block = int(a.get("block_size", 0))
    shape = e.static_shape(node.input[0])
    if block <= 0 or shape is None or a.get("precision"):
        return None
    axis = int(a.get("axis", 1)) % len(shape)
    return axis, shape[axis], block


def _blocked_dequantize(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    setup = _blocked_setup(e, node, a)
    x, scale = node.input[0], node.input[1]
    zero = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if setup is None or e.types.get(x) not in _INTEGER_TYPES:
        return False
    axis, n, block = setup
    dx = e.op("Cast", x, to=F32)
    if zero:
        dx = e.op("Sub", dx, e.op("Cast", _blocks_repeated(e, zero, axis, n, block), to=F32))
    y = e.op("Mul", dx, e.op("Cast", _blocks_repeated(e, scale, axis, n, block), to=F32))
    out_type = a.get("output_dtype") or e.types.get(scale) or F32
    e.op("Cast", y, to=out_type, out=node.output[0])
    return True


def _blocked_quantize(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    setup = _blocked_setup(e, node, a)
    x, scale = node.input[0], node.input[1]
    zero = node.input[2] if len(node.input) > 2 and node.input[2] else None
    out_type = (e.types.get(zero) if zero else None) or a.get("output_dtype") or TensorProto.UINT8
    if setup is None or out_type not in _INTEGER_TYPES or e.types.get(x) not in (F32, F64, TensorProto.FLOAT16):
        return False
    if e.types.get(scale) != e.types.get(x):  # x / scale in one type, as NumPy divides them
        return False
    axis, n, block = setup
    q = e.op("Round", e.op("Div", x, _blocks_repeated(e, scale, axis, n, block)))
    q = e.op("Cast", q, to=F64)  # exact for every value the type's range clips to
    if zero:
        q = e.op("Add", q, e.op("Cast", _blocks_repeated(e, zero, axis, n, block), to=F64))
    info = np.iinfo(helper.tensor_dtype_to_np_dtype(out_type))
    clipped = e.op("Clip", q, e.const(float(info.min), F64), e.const(float(info.max), F64))
    e.op("Cast", clipped, to=out_type, out=node.output[0])
    return True


RULES = [
    OpRule(
        ("DequantizeLinear",),
        summary="TVM; blocked (block_size) as float32 arithmetic on the repeated scale and zero point",
        rewrite=_blocked_dequantize,
    ),
    OpRule(
        ("QuantizeLinear",),
        summary="TVM; blocked (block_size) as Div/Round/Add/Clip on the repeated scale and zero point",
        rewrite=_blocked_quantize,
    ),
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
        lowering="kernel",
        summary="2-D 8-bit operands, K a multiple of 4: packed bytes multiplied with __dp4a, zero points applied "
        "exactly afterwards (lower/kernels/integer_matmul.py); otherwise TVM. B and its zero point stay run-time "
        "plugin inputs (weights)",
        weights=(1, 3),
        torch=_torch_matmul_integer,
    ),
    OpRule(
        ("DynamicQuantizeLinear",),
        summary="TVM; a constant input (weights quantized at run time) stays a run-time plugin input",
        weights=(0,),
        torch=_torch_dql,
    ),
]
