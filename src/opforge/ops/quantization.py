"""Dynamic int8 quantization as ONNX Runtime's quantize_dynamic writes it: DynamicQuantizeLinear (x -> uint8, scale,
zero point) and MatMulInteger (int32 accumulation of zero-point-shifted 8-bit operands), through TVM's frontend."""

from __future__ import annotations

from opforge.ops.base import OpRule


def _torch_dql(torch, node, consts):
    """ONNX's definition: scale = (max(0, max x) - min(0, min x)) / 255, zero point = saturate(round(-min / scale)),
    y = saturate(round(x / scale) + zero point); rounding half to even (torch.round)."""

    def f(x):
        xf = x.float()
        lo = torch.clamp(xf.min(), max=0.0)
        hi = torch.clamp(xf.max(), min=0.0)
        scale = (hi - lo) / 255.0
        zp = torch.clamp(torch.round(-lo / scale), 0, 255)
        y = torch.clamp(torch.round(xf / scale) + zp, 0, 255)
        return y.to(torch.uint8), scale, zp.to(torch.uint8)

    return f


def _torch_matmul_integer(torch, node, consts):
    """Exact: the shifted operands multiplied in float64 (8-bit products summed over K stay far below 2^53)."""

    def f(a, b, a_zero=None, b_zero=None):
        af = a.double() - (a_zero.double() if a_zero is not None else 0.0)
        bf = b.double() - (b_zero.double() if b_zero is not None else 0.0)
        return torch.matmul(af, bf).to(torch.int32)

    return f


RULES = [
    OpRule(("DynamicQuantizeLinear",), summary="TVM", torch=_torch_dql),
    OpRule(("MatMulInteger",), summary="TVM", torch=_torch_matmul_integer),
]
