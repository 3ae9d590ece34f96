"""RotaryEmbedding (opset 23): TVM's frontend has no converter and its context-dependent function body does not
lower in TVM for 3-D/4-D inputs without rotary_embedding_dim (a Reshape TVM divides by zero in). Written here in
[B, S, H, D] layout with static slices: cos/sin gathered by position_ids (or given per position), the first
rotary_embedding_dim features rotated in halves (or interleaved pairs), the rest passed through."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

I64 = TensorProto.INT64


def _slice(e: Emitter, x: str, start: int, end: int, step: int = 1) -> str:
    c = e.const
    return e.op("Slice", x, c([start], I64), c([end], I64), c([-1], I64), c([step], I64))


def _rotary(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    x, cos_cache, sin_cache = node.input[:3]
    pos = node.input[3] if len(node.input) > 3 and node.input[3] else None
    shape = e.static_shape(x)
    if shape is None or len(shape) not in (3, 4):
        return False
    interleaved, heads = a.get("interleaved", 0), a.get("num_heads", 0)
    if len(shape) == 4:
        b, h, s, d = shape
        xs = e.op("Transpose", x, perm=[0, 2, 1, 3])  # [B, S, H, D]
    else:
        if not heads:
            return False
        b, s, hidden = shape
        h, d = heads, hidden // heads
        xs = e.op("Reshape", x, e.const([b, s, h, d], I64))
    rd = a.get("rotary_embedding_dim", 0) or d
    half = rd // 2
    if pos:
        cos, sin = (e.op("Gather", c, pos, axis=0) for c in (cos_cache, sin_cache))  # [B, S, half]
    else:
        cos, sin = cos_cache, sin_cache
    cos, sin = (e.op("Unsqueeze", _slice(e, c, 0, half), e.const([2], I64)) for c in (cos, sin))  # [B, S, 1, half]
    rot = _slice(e, xs, 0, rd) if rd < d else xs
    if interleaved:
        x1, x2 = _slice(e, rot, 0, rd, 2), _slice(e, rot, 1, rd, 2)
    else:
        x1, x2 = _slice(e, rot, 0, half), _slice(e, rot, half, rd)
    o1 = e.op("Sub", e.op("Mul", x1, cos), e.op("Mul", x2, sin))
    o2 = e.op("Add", e.op("Mul", x2, cos), e.op("Mul", x1, sin))
    if interleaved:
        pairs = e.op("Concat", *(e.op("Unsqueeze", o, e.const([-1], I64)) for o in (o1, o2)), axis=-1)
        out = e.op("Reshape", pairs, e.const([b, s, h, rd], I64))
    else:
        out = e.op("Concat", o1, o2, axis=-1)
    if rd < d:
        out = e.op("Concat", out, _slice(e, xs, rd, d), axis=-1)
    if len(shape) == 4:
        e.op("Transpose", out, perm=[0, 2, 1, 3], out=node.output[0])
    else:
        e.op("Reshape", out, e.const(shape, I64), out=node.output[0])
    return True


RULES = [
    OpRule(
        ("RotaryEmbedding",),
        lowering="decompose",
        summary="static shapes: rotation of the leading rotary_embedding_dim features in ONNX ops ([B, S, H, D]); "
        "else its function body",
        rewrite=_rotary,
    )
]
