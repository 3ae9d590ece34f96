"""Rewrites of the subgraph before TVM imports it, where TVM's frontend falls short.

The plugin still implements the original node(s): these only change how its kernels are generated.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from opforge.extract.fold import expand_functions, fold_graph, static_dims
from opforge.lower.onnx_decompose import attrs, decompose, elem_types


def _tvm_gets_wrong(node: onnx.NodeProto) -> bool:
    """Ops TVM's ONNX frontend converts into something else: onnxruntime's contrib Attention instead of ONNX's;
    LayerNormalization without its Mean and InvStdDev outputs (checked on the conformance suite)."""
    if node.op_type == "Attention":
        return True
    return node.op_type == "LayerNormalization" and sum(1 for o in node.output if o) > 1


def unsupported_reason(model: onnx.ModelProto) -> str | None:
    """Attributes TVM's frontend ignores, so its kernels would compute something else: refused with a reason
    rather than built wrong (each found by a conformance case that came out wrong)."""
    for n in model.graph.node:
        a = attrs(n)
        if n.op_type == "SpaceToDepth" and a.get("mode", b"DCR") != b"DCR":
            return "SpaceToDepth mode CRD: TVM's frontend ignores the mode attribute"
        if n.op_type == "BatchNormalization" and a.get("training_mode", 0):
            return "BatchNormalization training_mode=1: TVM's frontend implements inference mode only"
        if n.op_type == "Resize" and a.get("antialias", 0):
            return "Resize antialias=1: TVM's frontend ignores antialiasing"
        if n.op_type == "ConvTranspose" and "output_shape" in a:
            return "ConvTranspose output_shape: TVM's frontend ignores it (give pads instead)"
    return None


def tvm_candidates(model: onnx.ModelProto) -> list[onnx.ModelProto]:
    """Forms of the model for TVM to try in order: folded (ops TVM converts wrongly expanded into their ONNX
    function bodies); also with the ops TVM lacks expanded; with every op that has a body expanded. Forms equal
    to an earlier one are left out."""
    have = _tvm_converters()
    forms = [
        expand_functions(model, _tvm_gets_wrong),
        expand_functions(model, lambda n: (have is not None and n.op_type not in have) or _tvm_gets_wrong(n)),
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
    decompose(m)
    types = {vi.name: vi.type for vi in [*m.graph.input, *m.graph.value_info]}
    for node in list(m.graph.node):
        if node.op_type == "Compress":
            _compress_to_gather(m, node)
        elif node.op_type == "IsInf":
            _isinf_by_sign(m, node)
        elif node.op_type == "Resize" and node.input[0] in types:
            rank = len(types[node.input[0]].tensor_type.shape.dim)
            _full_rank_resize(m, node, rank, static_dims(types[node.input[0]]))
    return m


def _full_rank_resize(m: onnx.ModelProto, node: onnx.NodeProto, rank: int, in_shape: list[int] | None) -> None:
    """Resize with `axes` or `keep_aspect_ratio_policy` (TVM's frontend takes neither) as a Resize with scales or
    sizes for every axis, when they are constants: axes left out keep scale 1 and the full roi; a policy fixes one
    scale for the given axes and the sizes it yields (ONNX: round(scale * input size))."""
    a = attrs(node)
    policy = a.get("keep_aspect_ratio_policy", b"stretch")
    policy = policy.decode() if isinstance(policy, bytes) else policy
    if "axes" not in a and policy == "stretch":
        return
    inits = {t.name: t for t in m.graph.initializer}

    def const(pos: int) -> np.ndarray | None:
        name = node.input[pos] if len(node.input) > pos else ""
        return numpy_helper.to_array(inits[name]) if name in inits else None

    axes = [x % rank for x in a.get("axes", range(rank))]
    roi, scales, sizes = const(1), const(2), const(3)
    if (scales is None) == (sizes is None):
        return
    new_inputs = [node.input[0], "", "", ""]
    stem = f"{node.output[0]}__opf_resize"
    if roi is not None and roi.size:
        full = np.array([0.0] * rank + [1.0] * rank, roi.dtype)
        for k, ax in enumerate(axes):
            full[ax], full[rank + ax] = roi[k], roi[len(axes) + k]
        m.graph.initializer.append(numpy_helper.from_array(full, stem + "_roi"))
        new_inputs[1] = stem + "_roi"
    if scales is not None:
        full = np.ones(rank, scales.dtype)
        full[axes] = scales
        m.graph.initializer.append(numpy_helper.from_array(full, stem + "_scales"))
        new_inputs[2] = stem + "_scales"
    else:
        if in_shape is None:
            return
        full = np.array(in_shape, np.int64)
        if policy == "stretch":
            full[axes] = sizes
        else:
            ratios = [sizes[k] / in_shape[ax] for k, ax in enumerate(axes)]
            scale = min(ratios) if policy == "not_larger" else max(ratios)
            for ax in axes:
                full[ax] = int(np.floor(scale * in_shape[ax] + 0.5))
        m.graph.initializer.append(numpy_helper.from_array(full, stem + "_sizes"))
        new_inputs[3] = stem + "_sizes"
    while new_inputs and not new_inputs[-1]:
        new_inputs.pop()
    node.input[:] = new_inputs
    kept = [x for x in node.attribute if x.name not in ("axes", "keep_aspect_ratio_policy")]
    del node.attribute[:]
    node.attribute.extend(kept)


def _isinf_by_sign(m: onnx.ModelProto, node: onnx.NodeProto) -> None:
    """IsInf with detect_positive/detect_negative (TVM's frontend ignores both): an Equal with +inf or -inf."""
    a = attrs(node)
    pos, neg = a.get("detect_positive", 1), a.get("detect_negative", 1)
    if pos and neg:
        return
    inf_name = f"{node.output[0]}__opf_inf"
    elem = elem_types(m).get(node.input[0], onnx.TensorProto.FLOAT)
    value = np.array(np.inf if pos else -np.inf, dtype=helper.tensor_dtype_to_np_dtype(elem))
    if not (pos or neg):
        value = np.array(np.nan, dtype=value.dtype)  # NaN equals nothing: all false, as ONNX says
    m.graph.initializer.append(numpy_helper.from_array(value, inf_name))
    _replace_node(m, node, [helper.make_node("Equal", [node.input[0], inf_name], list(node.output))])


def _compress_to_gather(m: onnx.ModelProto, node: onnx.NodeProto) -> None:
    """Compress with a constant condition selects fixed positions: a Gather with a constant index table.
    (TVM lowers Compress through a run-time nonzero, whose output size no plan can express.)"""
    inits = {i.name: i for i in m.graph.initializer}
    if len(node.input) < 2 or node.input[1] not in inits:
        return
    cond = numpy_helper.to_array(inits[node.input[1]]).astype(bool)
    axis = attrs(node).get("axis")
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
    _replace_node(m, node, new_nodes)


def _replace_node(m: onnx.ModelProto, node: onnx.NodeProto, new_nodes: list[onnx.NodeProto]) -> None:
    """`new_nodes` where `node` was, in graph order."""
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
