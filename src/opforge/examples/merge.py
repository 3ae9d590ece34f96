"""Merging single-node case models into one model (one plugin library for all of them)."""

from __future__ import annotations

import onnx
from onnx import helper


def merge_models(
    models: dict[str, onnx.ModelProto],
    opset: int,
    fix_dims: dict[str, dict[str, int]] | None = None,
    name: str = "merged",
) -> onnx.ModelProto:
    """Each model's tensors and nodes get the prefix "<key>__"; fix_dims[key] pins that model's dim_params."""
    nodes, inputs, outputs, inits = [], [], [], []
    for key, m in models.items():
        pins = (fix_dims or {}).get(key, {})

        def rn(t: str, key=key) -> str:
            return f"{key}__{t}" if t else t

        for n in m.graph.node:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.name = rn(n.name or n.op_type)
            c.input[:] = [rn(i) for i in n.input]
            c.output[:] = [rn(o) for o in n.output]
            nodes.append(c)
        for vi_list, dest in ((m.graph.input, inputs), (m.graph.output, outputs)):
            for vi in vi_list:
                c = onnx.ValueInfoProto()
                c.CopyFrom(vi)
                c.name = rn(vi.name)
                for d in c.type.tensor_type.shape.dim:
                    if d.dim_param in pins:
                        value = pins[d.dim_param]
                        d.Clear()
                        d.dim_value = value
                dest.append(c)
        for t in m.graph.initializer:
            c = onnx.TensorProto()
            c.CopyFrom(t)
            c.name = rn(t.name)
            inits.append(c)
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="opforge")
    model.ir_version = 9
    if fix_dims:  # re-infer output shapes for the pinned dims
        del model.graph.output[:]
        for vi in outputs:
            c = onnx.ValueInfoProto()
            c.name, c.type.tensor_type.elem_type = vi.name, vi.type.tensor_type.elem_type
            model.graph.output.append(c)
        inferred = onnx.shape_inference.infer_shapes(model)
        del model.graph.output[:]
        model.graph.output.extend(inferred.graph.output)
    return model
