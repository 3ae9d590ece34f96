"""Scan (opset 9+): TVM's ONNX frontend has no converter. With the scan length static, the loop is unrolled: the
body's nodes are copied once per iteration (their tensors renamed per step), the scan inputs sliced with a Gather
of one index (the scanned axis removed, walked backwards for direction 1), the states threaded from one copy to the
next, and the per-step scan outputs stacked with Unsqueeze + Concat (in reverse order for direction 1). Exact: the
same ops run on the same values in the same order. Also serves the function bodies that use Scan
(LinearAttention's)."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

I64 = TensorProto.INT64
MAX_STEPS = 256  # longer loops are left to TVM (which refuses Scan): the unrolled graph grows with the length


def _has_subgraph(g: onnx.GraphProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute)


def _scan(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    if e.opset() < 9:
        return False  # Scan-8 (batch axis, sequence_lens) is not unrolled
    body: onnx.GraphProto = a["body"]
    if _has_subgraph(body):
        return False  # nested graphs would need their outer-scope names renamed too
    m = a["num_scan_inputs"]
    n = len(node.input) - m
    k = len(body.output) - n
    states, xs = list(node.input[:n]), list(node.input[n:])
    in_axes = list(a.get("scan_input_axes", [0] * m))
    in_dirs = list(a.get("scan_input_directions", [0] * m))
    out_axes = list(a.get("scan_output_axes", [0] * k))
    out_dirs = list(a.get("scan_output_directions", [0] * k))
    shapes = [e.inferred_shape(x) for x in xs]
    if m == 0 or any(s is None for s in shapes):
        return False
    axes = [ax + len(s) if ax < 0 else ax for ax, s in zip(in_axes, shapes)]
    lengths = {s[ax] for s, ax in zip(shapes, axes)}
    if len(lengths) != 1:
        return False
    steps = lengths.pop()
    if not 0 < steps <= MAX_STEPS:
        return False
    inits = {}
    for t in body.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copy.name = f"{e.prefix}_body_{t.name}"
        e.m.graph.initializer.append(copy)
        inits[t.name] = copy.name
    per_step: list[list[str]] = []
    for t in range(steps):
        rename = dict(inits)
        rename.update({vi.name: s for vi, s in zip(body.input[:n], states)})
        for j, x in enumerate(xs):
            idx = e.const(steps - 1 - t if in_dirs[j] else t, I64)
            rename[body.input[n + j].name] = e.op("Gather", x, idx, axis=axes[j])
        for bn in body.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(bn)
            copy.name = ""
            copy.input[:] = [rename.get(i, i) for i in bn.input]
            outs = []
            for o in bn.output:
                if o:
                    rename[o] = f"{e.prefix}_s{t}_{o}"
                outs.append(rename.get(o, o) if o else "")
            copy.output[:] = outs
            e.nodes.append(copy)
        results = [rename.get(o.name, o.name) for o in body.output]
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
            shape = e.inferred_shape(out)
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
        summary="opset 9+, static scan length (at most 256 steps): unrolled, the body copied once per step",
        rewrite=_scan,
    )
]
