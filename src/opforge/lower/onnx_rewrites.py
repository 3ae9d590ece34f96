"""Rewrites of the one-node subgraph before TVM imports it, where TVM's frontend falls short.

The plugin still implements the original node: these only change how its kernels are generated.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def prepare_for_tvm(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = m.graph.node[0]
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
    idx_name = "opforge_compress_idx"
    m.graph.initializer.append(numpy_helper.from_array(np.flatnonzero(cond).astype(np.int64), idx_name))
    new_nodes = []
    if axis is None:  # Compress flattens first
        shape_name = "opforge_flat_shape"
        m.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), shape_name))
        new_nodes.append(helper.make_node("Reshape", [x, shape_name], ["opforge_flat"]))
        x, axis = "opforge_flat", 0
    new_nodes.append(helper.make_node("Gather", [x, idx_name], list(node.output), axis=axis))
    del m.graph.node[:]
    m.graph.node.extend(new_nodes)


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
