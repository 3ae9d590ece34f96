"""ReverseSequence: TVM's ONNX frontend has no converter. With the input's shape static it is one GatherElements
along the time axis, by an index computed from sequence_lens at run time: position t of batch b reads
len[b] - 1 - t where t < len[b], else t itself (the tail is copied as is). Exact (a pure gather). The recurrent
ops (rnn.py) use the same reversal for their reverse direction with sequence_lens."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, InputDomain, OpRule

I64 = TensorProto.INT64


def reverse_sequence(e: Emitter, x: str, lens: str, shape: list[int], time_axis: int, batch_axis: int) -> str:
    """x (of static `shape`, time and batch axes 0 and 1 in either order) with the first lens[b] time steps of
    every batch entry b reversed."""
    steps = shape[time_axis]
    t = np.arange(steps, dtype=np.int64)
    t = t.reshape(-1, 1) if time_axis == 0 else t.reshape(1, -1)
    tc = e.const(t, I64)
    ln = e.op("Cast", lens, to=I64)
    ln = e.op("Max", e.op("Min", ln, e.const(steps, I64)), e.const(0, I64))  # invalid lengths stay in bounds
    ln = e.unsqueeze(ln, [time_axis])  # [1, B] or [B, 1]
    reversed_idx = e.op("Sub", e.op("Sub", ln, e.const([1], I64)), tc)
    idx = e.op("Where", e.op("Less", tc, ln), reversed_idx, tc)  # [T, B] or [B, T]
    if len(shape) > 2:
        idx = e.unsqueeze(idx, list(range(2, len(shape))))
        idx = e.op("Expand", idx, e.const(shape, I64))
    return e.op("GatherElements", x, idx, axis=time_axis)


def _reverse_sequence(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    x, lens = node.input[:2]
    shape = e.static_shape(x)
    time_axis, batch_axis = a.get("time_axis", 0), a.get("batch_axis", 1)
    if shape is None or {time_axis, batch_axis} != {0, 1} or e.opset() < 11:
        return False  # GatherElements needs opset 11
    out = reverse_sequence(e, x, lens, shape, time_axis, batch_axis)
    e.op("Identity", out, out=node.output[0])
    return True


def lengths_domain(d: InputDomain, pos: int, steps: int) -> None:
    """Draws input `pos` (sequence lengths) in [1, steps]."""
    name = d.free(pos)
    if name:
        v = d.values[name]
        d.values[name] = d.rng.integers(1, steps + 1, size=v.shape).astype(v.dtype)


def _inputs(d: InputDomain) -> None:
    lengths_domain(d, 1, d.shape(0)[d.a.get("time_axis", 0)])


RULES = [
    OpRule(
        ("ReverseSequence",),
        lowering="decompose",
        summary="static shape: GatherElements along the time axis by an index computed from sequence_lens",
        rewrite=_reverse_sequence,
        inputs=_inputs,
    )
]
