"""BatchNormalization. Inference mode: TVM's frontend. Training mode (training_mode=1, opset 14+), which TVM's
frontend does not implement, is written as ONNX's reference computes it: the batch statistics over every axis but
the channel axis (mean, population variance), Y = scale * (X - mean) / sqrt(var + epsilon) + B, and the running
statistics input * momentum + batch statistic * (1 - momentum)."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

I64 = TensorProto.INT64


def _reduce_mean(e: Emitter, x: str, axes: list[int]) -> str:
    """ReduceMean keeping dims, in the form of the model's opset (axes an input from opset 18)."""
    if e.opset() >= 18:
        return e.op("ReduceMean", x, e.const(axes, I64), keepdims=1)
    return e.op("ReduceMean", x, axes=axes, keepdims=1)


def _training(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """Training mode in ONNX ops (inference mode is left to TVM)."""
    if not a.get("training_mode", 0):
        return False
    x, scale, bias, mean, var = node.input[:5]
    rank = e.rank(x)
    if rank is None or rank < 2:
        return False
    momentum, eps = a.get("momentum", 0.9), a.get("epsilon", 1e-5)
    axes = [0, *range(2, rank)]
    per_channel = e.const([-1] + [1] * (rank - 2), I64)

    def channel(v: str) -> str:
        return e.op("Reshape", v, per_channel)

    batch_mean = _reduce_mean(e, x, axes)  # [1, C, 1, ...]
    centered = e.op("Sub", x, batch_mean)
    batch_var = _reduce_mean(e, e.op("Mul", centered, centered), axes)
    std = e.op("Sqrt", e.op("Add", batch_var, e.const(eps)))
    y = e.op("Div", e.op("Mul", channel(scale), centered), std)
    e.op("Add", y, channel(bias), out=node.output[0])
    outs = [*node.output, "", ""]
    flat = e.const([-1], I64)
    for out, running, batch in ((outs[1], mean, batch_mean), (outs[2], var, batch_var)):
        if out:
            kept = e.op("Mul", running, e.const(momentum))
            new = e.op("Mul", e.op("Reshape", batch, flat), e.const(1.0 - momentum))
            e.op("Add", kept, new, out=out)
    return True


def _refuse(node: onnx.NodeProto, a: dict) -> str | None:
    if a.get("training_mode", 0):
        return "BatchNormalization training_mode=1 with an input of unknown rank: TVM's frontend implements inference"
    return None


RULES = [
    OpRule(
        ("BatchNormalization",),
        summary="TVM; training_mode=1 as ONNX ops (batch statistics, running statistics)",
        rewrite=_training,
        refuse=_refuse,
    )
]
