"""Scan: TVM's ONNX frontend has no converter. With the scan length static, the loop is unrolled: the
body's nodes are copied once per iteration (their tensors renamed per step), the scan inputs sliced with a Gather
of one index (the scanned axis removed, walked backwards for direction 1), the states threaded from one copy to the
next, and the per-step scan outputs stacked with Unsqueeze + Concat (in reverse order for direction 1). Exact: the
same ops run on the same values in the same order. Also serves the function bodies that use Scan
(LinearAttention's). Scan-8 (batch axis 0, scan axis 1) is unrolled over batch entries and steps, with
sequence_lens absent or constant and full."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

I64 = TensorProto.INT64
MAX_STEPS = 256  # longer loops are left to TVM (which refuses Scan): the unrolled graph grows with the length


def _has_subgraph(g: onnx.GraphProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute)


def _body_initializers(e: Emitter, body: onnx.GraphProto) -> dict[str, str]:
    """The body's initializers copied into the graph once; body name -> graph name."""
    inits = {}
    for t in body.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copy.name = f"{e.prefix}_body_{t.name}"
        e.m.graph.initializer.append(copy)
        inits[t.name] = copy.name
    return inits


def _copy_body(e: Emitter, body: onnx.GraphProto, inputs: list[str], tag: str, inits: dict[str, str]) -> list[str]:
    """One copy of the body's nodes reading `inputs` for its formal inputs (outer-scope names kept); the names
    of its outputs."""
    rename = dict(inits)
    rename.update({vi.name: x for vi, x in zip(body.input, inputs)})
    for bn in body.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(bn)
        copy.name = ""
        copy.input[:] = [rename.get(i, i) for i in bn.input]
        for o in bn.output:
            if o:
                rename[o] = f"{e.prefix}_{tag}_{o}"
        copy.output[:] = [rename[o] if o else "" for o in bn.output]
        e.nodes.append(copy)
    return [rename.get(o.name, o.name) for o in body.output]


def _scan8(e: Emitter, node: onnx.NodeProto, a: dict, body: onnx.GraphProto) -> bool:
    """Scan-8: every input and output has a batch axis 0, the scan axis is 1, the body sees one batch entry."""
    lens = node.input[0]
    m = a["num_scan_inputs"]
    rest = list(node.input[1:])
    n = len(rest) - m
    states, xs = rest[:n], rest[n:]
    dirs = list(a.get("directions", [0] * m))
    shapes = [e.static_shape(x) for x in xs]
    if m == 0 or any(s is None or len(s) < 2 for s in shapes) or len({tuple(s[:2]) for s in shapes}) != 1:
        return False
    batch, steps = shapes[0][:2]
    if lens:
        value = e.initializer(lens)
        if value is None or not bool(np.all(value == steps)):
            return False  # per-entry lengths: not unrolled
    if not 0 < batch * steps <= MAX_STEPS:
        return False
    inits = _body_initializers(e, body)
    finals: list[list[str]] = []
    scanned: list[list[str]] = []
    for b in range(batch):
        bi = e.const(b, I64)
        st = [e.op("Gather", s, bi, axis=0) for s in states]
        xb = [e.op("Gather", x, bi, axis=0) for x in xs]
        outs: list[list[str]] = []
        for t in range(steps):
            slices = [
                e.op("Gather", x, e.const(steps - 1 - t if dirs[j] else t, I64), axis=0) for j, x in enumerate(xb)
            ]
            results = _copy_body(e, body, [*st, *slices], f"b{b}s{t}", inits)
            st = results[:n]
            outs.append(results[n:])
        finals.append(st)
        scanned.append([e.op("Concat", *(e.unsqueeze(o[j], [0]) for o in outs), axis=0) for j in range(len(outs[0]))])
    results = [[f[i] for f in finals] for i in range(n)] + [[s[j] for s in scanned] for j in range(len(scanned[0]))]
    for out, parts in zip(node.output, results):
        if out:
            e.op("Concat", *(e.unsqueeze(p, [0]) for p in parts), axis=0, out=out)
    return True


def _scan(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    body: onnx.GraphProto = a["body"]
    if _has_subgraph(body):
        return False  # nested graphs would need their outer-scope names renamed too
    if e.opset() < 9:
        return _scan8(e, node, a, body)
    m = a["num_scan_inputs"]
    n = len(node.input) - m
    k = len(body.output) - n
    states, xs = list(node.input[:n]), list(node.input[n:])
    in_axes = list(a.get("scan_input_axes", [0] * m))
    in_dirs = list(a.get("scan_input_directions", [0] * m))
    out_axes = list(a.get("scan_output_axes", [0] * k))
    out_dirs = list(a.get("scan_output_directions", [0] * k))
    shapes = [e.static_shape(x) for x in xs]
    if m == 0 or any(s is None for s in shapes):
        return False
    axes = [ax + len(s) if ax < 0 else ax for ax, s in zip(in_axes, shapes)]
    lengths = {s[ax] for s, ax in zip(shapes, axes)}
    if len(lengths) != 1:
        return False
    steps = lengths.pop()
    if not 0 < steps <= MAX_STEPS:
        return False
    inits = _body_initializers(e, body)
    per_step: list[list[str]] = []
    for t in range(steps):
        slices = [
            e.op("Gather", x, e.const(steps - 1 - t if in_dirs[j] else t, I64), axis=axes[j]) for j, x in enumerate(xs)
        ]
        results = _copy_body(e, body, [*states, *slices], f"s{t}", inits)
        states = results[:n]
        per_step.append(results[n:])
    for i in range(n):
        if node.output[i]:
            e.op("Identity", states[i], out=node.output[i])
    for j in range(k):
        out = node.output[n + j] if len(node.output) > n + j else ""
        if not out:
            continue
        ax = out_axes[j]
        if ax < 0:
            shape = e.static_shape(out)
            if shape is None:
                return False
            ax += len(shape)
        parts = [per_step[t][j] for t in range(steps)]
        if out_dirs[j]:
            parts.reverse()
        e.op("Concat", *(e.unsqueeze(p, [ax]) for p in parts), axis=ax, out=out)
    return True


RULES = [
    OpRule(
        ("Scan",),
        lowering="decompose",
        summary="static scan length (at most 256 steps; Scan-8: batch x steps, sequence_lens full): unrolled, "
        "the body copied once per step",
        rewrite=_scan,
    )
]
