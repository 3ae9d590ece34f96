"""Rewrites of the subgraph before TVM imports it, where TVM's frontend falls short.

The plugin still implements the original node(s): these only change how its kernels are generated.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Ops TVM's ONNX frontend has a converter for that implements another op (onnxruntime's contrib Attention).
_TVM_CONVERTS_OTHER_OP = {"Attention"}


def tvm_candidates(model: onnx.ModelProto) -> list[onnx.ModelProto]:
    """Forms of the model for TVM to try in order: folded; with the ops TVM lacks expanded into their ONNX
    function bodies; with every op that has a body expanded. Forms equal to an earlier one are left out."""
    from opforge.extract.fold import expand_functions, fold_graph

    have = _tvm_converters()
    forms = [
        model,
        expand_functions(
            model, lambda n: (have is not None and n.op_type not in have) or n.op_type in _TVM_CONVERTS_OTHER_OP
        ),
        expand_functions(model, lambda n: True),
    ]
    out, seen = [], set()
    for f in forms:
        m = prepare_for_tvm(fold_graph(f))
        key = m.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def _tvm_converters() -> set[str] | None:
    """The op types TVM's ONNX frontend converts (None if this TVM does not say)."""
    from tvm.relax.frontend.onnx import onnx_frontend

    try:
        return set(onnx_frontend._get_convert_map())
    except Exception:
        return None


def prepare_for_tvm(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for node in list(m.graph.node):
        if node.op_type == "Compress":
            _compress_to_gather(m, node)
    return m


def _compress_to_gather(m: onnx.ModelProto, node: onnx.NodeProto) -> None:
    """Compress with a constant condition selects fixed positions: a Gather with a constant index table.
    (TVM lowers Compress through a run-time nonzero, whose output size no plan can express.)"""
    inits = {i.name: i for i in m.graph.initializer}
    if len(node.input) < 2 or node.input[1] not in inits:
        return
    cond = numpy_helper.to_array(inits[node.input[1]]).astype(bool)
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), None)
    x = node.input[0]
    idx_name = f"{node.output[0]}__opf_compress_idx"
    m.graph.initializer.append(numpy_helper.from_array(np.flatnonzero(cond).astype(np.int64), idx_name))
    new_nodes = []
    if axis is None:  # Compress flattens first
        shape_name, flat = f"{node.output[0]}__opf_flat_shape", f"{node.output[0]}__opf_flat"
        m.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), shape_name))
        new_nodes.append(helper.make_node("Reshape", [x, shape_name], [flat]))
        x, axis = flat, 0
    new_nodes.append(helper.make_node("Gather", [x, idx_name], list(node.output), axis=axis))
    nodes = list(m.graph.node)
    at = nodes.index(node)
    del m.graph.node[:]
    m.graph.node.extend([*nodes[:at], *new_nodes, *nodes[at + 1 :]])


def append_casts(model: onnx.ModelProto, casts: dict[int, int]) -> onnx.ModelProto:
    """Cast output k to ONNX element type casts[k] (where TVM's frontend infers another dtype than ONNX)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for k, elem in casts.items():
        out = m.graph.output[k]
        raw = f"{out.name}_opforge_uncast"
        for n in m.graph.node:
            n.output[:] = [raw if o == out.name else o for o in n.output]
        m.graph.node.append(helper.make_node("Cast", [raw], [out.name], to=elem))
    return m
