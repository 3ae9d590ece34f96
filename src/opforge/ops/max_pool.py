"""MaxPool with its Indices output, which TVM's frontend does not produce. Written with a constant window table
(static shapes, auto_pad NOTSET, ceil_mode 0): for each output position its kernel_size input positions in ONNX's
scan order; a position in the padding is replaced by the window's first valid position. Then
  patches = Gather(X viewed as [N, C, H*W...], table)      [N, C, P, K]
  Y = ReduceMax(patches), k = ArgMax(patches) (the first maximum)
  Indices = (n * C + c) * H*W... + the input position k stands for.
This is ONNX's reference: the first strictly greater value in scan order over the valid positions (a padding slot
holds a copy of the window's first valid value, so a tie with it resolves to that same position).

MaxUnpool, whose TVM converter fails on a constant output_shape, is written as ONNX's reference computes it: X
scattered (ScatterElements) at its flat indices into zeros of the inferred shape ((in - 1) * stride - pads +
kernel), then padded with zeros at the end up to output_shape."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.auto_pad import explicit_pads_rewrite
from opforge.ops.base import Emitter, OpRule, text

I64 = TensorProto.INT64
MAX_TABLE = 1 << 22  # window table entries (int64 each)


def _window_table(spatial: list[int], a: dict) -> tuple[np.ndarray, list[int]] | None:
    """(table [P, K] of flat input positions, output spatial shape), or None where the rewrite does not apply."""
    nd = len(spatial)
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1] * nd))
    dilations = list(a.get("dilations", [1] * nd))
    pads = list(a.get("pads", [0] * 2 * nd))
    out = [
        (spatial[i] + pads[i] + pads[nd + i] - ((kernel[i] - 1) * dilations[i] + 1)) // strides[i] + 1
        for i in range(nd)
    ]
    if any(o <= 0 for o in out) or int(np.prod(out)) * int(np.prod(kernel)) > MAX_TABLE:
        return None
    rows = []
    for o in itertools.product(*[range(n) for n in out]):
        taps = itertools.product(*[range(kernel[i]) for i in range(nd)])
        coords = [[o[i] * strides[i] - pads[i] + t[i] * dilations[i] for i in range(nd)] for t in taps]
        valid = [all(0 <= c[i] < spatial[i] for i in range(nd)) for c in coords]
        if not any(valid):
            return None
        first = coords[valid.index(True)]
        flat = [int(np.ravel_multi_index(c if ok else first, spatial)) for c, ok in zip(coords, valid)]
        rows.append(flat)
    return np.array(rows, np.int64), out


def _with_indices(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    if len(node.output) < 2 or not node.output[1]:
        return False
    shape = e.static_shape(node.input[0])
    if (
        shape is None
        or text(a.get("auto_pad"), "NOTSET") != "NOTSET"
        or a.get("ceil_mode", 0)
        or "kernel_shape" not in a
    ):
        return False
    n, c, spatial = shape[0], shape[1], shape[2:]
    order = a.get("storage_order", 0)
    if order and len(spatial) != 2:
        return False
    built = _window_table(spatial, a)
    if built is None:
        return False
    table, out = built
    positions, taps = table.shape
    size = int(np.prod(spatial))
    flat = e.op("Reshape", node.input[0], e.const([n, c, size], I64))
    patches = e.op("Gather", flat, e.const(table.reshape(-1), I64), axis=2)
    patches = e.op("Reshape", patches, e.const([n, c, positions, taps], I64))
    out_shape = e.const([n, c, *out], I64)
    axes = {"axes": [3]} if e.opset() < 18 else {}
    reduce_inputs = [patches] if e.opset() < 18 else [patches, e.const([3], I64)]
    e.op("Reshape", e.op("ReduceMax", *reduce_inputs, keepdims=1, **axes), out_shape, out=node.output[0])
    k = e.op("ArgMax", patches, axis=3, keepdims=1)
    if order:  # column-major: h + w * H
        h, w = np.divmod(table, spatial[1])
        table = h + w * spatial[0]
    sources = e.op("Expand", e.const(table, I64), e.const([n, c, positions, taps], I64))
    where = e.op("GatherElements", sources, k, axis=3)
    base = (np.arange(n * c, dtype=np.int64) * size).reshape(n, c, 1, 1)
    e.op("Reshape", e.op("Add", where, e.const(base, I64)), out_shape, out=node.output[1])
    return True


def _max_unpool(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    x, indices = node.input[:2]
    shape, elem = e.static_shape(x), e.types.get(x)
    if shape is None or elem is None or "kernel_shape" not in a:
        return False
    nd = len(shape) - 2
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1] * nd))
    pads = list(a.get("pads", [0] * 2 * nd))
    inferred = shape[:2] + [(shape[i + 2] - 1) * strides[i] - (pads[i] + pads[nd + i]) + kernel[i] for i in range(nd)]
    wanted = inferred
    if len(node.input) > 2 and node.input[2]:
        given = e.initializer(node.input[2])
        if given is None:
            return False
        wanted = [int(v) for v in given.reshape(-1)]
    if len(wanted) != len(inferred) or any(w < i for w, i in zip(wanted, inferred)):
        return False
    flat = e.const([-1], I64)
    zeros = e.op("Expand", e.const(0, elem), e.const([int(np.prod(inferred))], I64))
    scattered = e.op("ScatterElements", zeros, e.op("Reshape", indices, flat), e.op("Reshape", x, flat), axis=0)
    y = e.op("Reshape", scattered, e.const(inferred, I64))
    if wanted != inferred:
        ends = [w - i for w, i in zip(wanted, inferred)]
        y = e.op("Pad", y, e.const([0] * len(ends) + ends, I64), e.const(0, elem))
    e.op("Identity", y, out=node.output[0])
    return True


def _max_pool(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """SAME_* padding written out as ONNX specifies it (auto_pad.py), else the Indices output's rewrite."""
    if text(a.get("auto_pad"), "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        return explicit_pads_rewrite(e, node, a)
    return _with_indices(e, node, a)


RULES = [
    OpRule(
        ("MaxUnpool",),
        summary="ScatterElements into zeros of the inferred shape, padded up to output_shape (ONNX's reference)",
        lowering="decompose",
        rewrite=_max_unpool,
    ),
    OpRule(
        ("MaxPool",),
        summary="TVM; auto_pad SAME_* as explicit pads; the Indices output through a constant window table",
        rewrite=_max_pool,
    ),
]
