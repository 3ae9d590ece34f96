"""Small helpers for building ONNX models of one node or a few."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from opforge.core import dtypes


def single_node_model(
    op: str,
    inputs: list[tuple[str, str, list]],  # (name, dtype, shape) of graph inputs, in node order
    consts: dict[str, np.ndarray] | None = None,  # initializers, by name
    order: list[str] | None = None,  # node input names ("" for an absent optional input); default: inputs
    attrs: dict | None = None,
    n_outputs: int = 1,
    opset: int = 18,
    name: str = "node0",
) -> onnx.ModelProto:
    node_inputs = order if order is not None else [n for n, _, _ in inputs]
    outs = [f"y{k}" for k in range(n_outputs)]
    node = helper.make_node(op, node_inputs, outs, name=name, **(attrs or {}))
    return graph_model([node], inputs, consts, opset, f"{op.lower()}_graph")


def graph_model(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, str, list]],
    consts: dict[str, np.ndarray] | None = None,
    opset: int = 18,
    name: str = "graph",
) -> onnx.ModelProto:
    """A model of the nodes in order; its outputs are the last node's outputs, typed by ONNX's shape inference."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, dtypes.by_name(t).onnx, s) for n, t, s in inputs],
        [helper.make_value_info(o, onnx.TypeProto()) for o in nodes[-1].output],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="opforge")
    inferred = onnx.shape_inference.infer_shapes(model)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model
