"""Graph-level ONNX simplification: constant folding and expansion of ops into their ONNX function bodies.

Folding evaluates, with ONNX's reference evaluator, every node whose inputs do not depend on a graph input, and
reads Shape/Size of tensors whose shapes are static. Kernel compilers (and TensorRT) need such values at build
time; TVM's frontend cannot import shape values computed at run time at all.

Expansion replaces a node by the body the ONNX standard defines for its op (LayerNormalization, Celu,
NegativeLogLikelihoodLoss, Attention, ...), so an op a kernel compiler lacks becomes ops it has.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnx.inliner
from onnx import helper, numpy_helper

from opforge.extract.model_io import opset_of

NONDETERMINISTIC = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
}
_MAX_FOLDED_ELEMENTS = 1 << 22
EXPAND_DOMAIN = "opforge.expand"
# Domains whose ops' ONNX function bodies are expanded (ai.onnx.preview: FlexAttention).
FUNCTION_DOMAINS = ("", "ai.onnx", "ai.onnx.preview")


def _dom(node: onnx.NodeProto) -> str:
    return "" if node.domain == "ai.onnx" else node.domain


def infer_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Types and shapes of every tensor ONNX shape inference (with data propagation) can give; raises on failure."""
    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    g = inferred.graph
    types = {vi.name: vi.type for vi in [*g.input, *g.value_info, *g.output]}
    for init in g.initializer:
        types[init.name] = helper.make_tensor_type_proto(init.data_type, list(init.dims))
    return types


def static_dims(t: onnx.TypeProto | None) -> list[int] | None:
    if t is None or not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    dims = t.tensor_type.shape.dim
    return [d.dim_value for d in dims] if all(d.HasField("dim_value") for d in dims) else None


def constant_values(model: onnx.ModelProto, types: dict[str, onnx.TypeProto]) -> dict[str, np.ndarray]:
    """Values of every tensor that does not depend on a graph input's values, folded in graph order."""
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    opset = opset_of(model)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC:
            continue
        if node.op_type in ("Shape", "Size") and node.input[0] not in values:
            dims = static_dims(types.get(node.input[0]))
            if dims is not None:
                if node.op_type == "Size":
                    values[node.output[0]] = np.array(int(np.prod(dims)), dtype=np.int64)
                else:
                    start = _int_attr(node, "start", 0)
                    end = _int_attr(node, "end", len(dims))
                    values[node.output[0]] = np.array(dims[start:end], dtype=np.int64)
            continue
        if node.op_type == "CastLike" and node.input[0] in values and node.input[1] not in values:
            like = types.get(node.input[1])  # the result depends on the target's element type only
            if like is not None and like.HasField("tensor_type") and like.tensor_type.elem_type:
                cast = helper.make_node("Cast", [node.input[0]], list(node.output), to=like.tensor_type.elem_type)
                outs = run_node(cast, values, opset)
                if outs is not None:
                    values.update(outs)
            continue
        if all(not i or i in values for i in node.input) and not any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
        ):
            outs = run_node(node, values, opset)
            if outs is not None:
                values.update(outs)
    return values


def _int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def run_node(node: onnx.NodeProto, values: dict[str, np.ndarray], opset: int) -> dict[str, np.ndarray] | None:
    """The node's outputs on constant inputs, or None where the reference evaluator cannot compute them."""
    from onnx.reference import ReferenceEvaluator

    inputs = [i for i in node.input if i]
    graph = helper.make_graph(
        [node],
        "fold",
        [
            helper.make_tensor_value_info(i, helper.np_dtype_to_tensor_dtype(values[i].dtype), values[i].shape)
            for i in inputs
        ],
        [helper.make_value_info(o, onnx.TypeProto()) for o in node.output if o],
    )
    try:
        sess = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))
        outs = sess.run(None, {i: values[i] for i in inputs})
    except Exception:
        return None  # not foldable here: the node stays
    result = {}
    for name, v in zip([o for o in node.output if o], outs):
        if not isinstance(v, np.ndarray) or v.size > _MAX_FOLDED_ELEMENTS:
            return None
        result[name] = v
    return result


def fold_graph(model: onnx.ModelProto, rounds: int = 4) -> onnx.ModelProto:
    """The model with every graph-input-independent tensor as an initializer and the nodes that made them
    removed. A graph output that becomes constant is written by an Identity of its value."""
    m = _copy(model)
    for _ in range(rounds):  # shape inference sees further once shape values are constants
        try:
            types = infer_types(m)
        except Exception:
            return m
        values = constant_values(m, types)
        before = len(m.graph.node)
        inlined = _inline_constant_ifs(m, values)
        _rebuild(m, values)
        if not inlined and len(m.graph.node) >= before:
            break
    return m


def _inline_constant_ifs(m: onnx.ModelProto, values: dict[str, np.ndarray]) -> bool:
    """Replace each If whose condition is constant by the nodes of the branch it takes (function bodies such as
    AffineGrid's branch on an attribute); the branch's outputs reach the If's outputs through Identity nodes."""
    g, nodes, changed = m.graph, [], False
    for n in g.node:
        if n.op_type != "If" or n.domain not in ("", "ai.onnx") or n.input[0] not in values:
            nodes.append(n)
            continue
        take = "then_branch" if bool(np.asarray(values[n.input[0]]).reshape(-1)[0]) else "else_branch"
        branch = next(a.g for a in n.attribute if a.name == take)
        nodes.extend(branch.node)
        g.initializer.extend(branch.initializer)
        nodes.extend(helper.make_node("Identity", [b.name], [o]) for b, o in zip(branch.output, n.output) if o)
        changed = True
    if changed:
        del g.node[:]
        g.node.extend(nodes)
    return changed


def _rebuild(m: onnx.ModelProto, values: dict[str, np.ndarray]) -> None:
    g = m.graph
    const_suffix = "__opf_const"
    outputs = {o.name for o in g.output}
    kept = [
        n
        for n in g.node
        if not all(not o or o in values for o in n.output)
        or (n.op_type == "Identity" and n.input[0].endswith(const_suffix))
    ]
    new_nodes = list(kept)
    for o in g.output:
        if o.name in values and not any(o.name in n.output for n in kept):
            new_nodes.append(helper.make_node("Identity", [o.name + const_suffix], [o.name]))
    used = {i for n in new_nodes for i in _node_reads(n)} | outputs
    graph_inputs = {i.name for i in g.input}
    inits = []
    for name in sorted(used):
        src = name[: -len(const_suffix)] if name.endswith(const_suffix) else name
        if src in values and name not in graph_inputs:
            inits.append(numpy_helper.from_array(np.asarray(values[src]), name))
    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(inits)
    # value_info of removed tensors would only confuse later inference
    del g.value_info[:]


def _node_reads(node: onnx.NodeProto) -> set[str]:
    """The tensors a node reads: its inputs and the outer-scope names its subgraphs (Scan, Loop, If bodies) use."""
    reads = set(node.input)
    for a in node.attribute:
        for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            inner = {i.name for i in g.input} | {t.name for t in g.initializer}
            inner |= {o for n in g.node for o in n.output}
            reads |= {i for n in g.node for i in _node_reads(n) if i not in inner}
            reads |= {o.name for o in g.output if o.name not in inner}
    return reads


def has_function_body(node: onnx.NodeProto, opset: int) -> bool:
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


def expand_functions(model: onnx.ModelProto, which: Callable[[onnx.NodeProto], bool]) -> onnx.ModelProto:
    """The model with each node `which` selects (and that has an ONNX function body) replaced by that body,
    repeatedly, so bodies that use function ops are expanded too (up to three levels)."""
    last = model
    for _ in range(3):
        m = _copy(last)  # a level that fails to inline must leave the previous level untouched
        opset = opset_of(m)
        try:
            types = infer_types(m)
        except Exception:
            types = {}
        opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in m.opset_import}
        opsets[""] = opset
        chosen = [
            n
            for n in m.graph.node
            if n.domain in FUNCTION_DOMAINS and which(n) and has_function_body(n, opsets.get(_dom(n), opset))
        ]
        if not chosen:
            break
        for k, node in enumerate(chosen):
            body = _function_body(node, opsets.get(_dom(node), opset), types)
            if body is None:
                continue
            body.domain, body.name = EXPAND_DOMAIN, f"{node.op_type}_{k}"
            node.op_type, node.domain = body.name, EXPAND_DOMAIN
            m.functions.append(body)
        if not m.functions:
            break
        if not any(o.domain == EXPAND_DOMAIN for o in m.opset_import):
            m.opset_import.append(helper.make_opsetid(EXPAND_DOMAIN, 1))
        try:  # bodies written for older opsets are converted to the model's, which needs every tensor's type
            m = onnx.shape_inference.infer_shapes(m)
            inlined = onnx.inliner.inline_local_functions(m, convert_version=True)
        except Exception:
            return last  # ONNX's inliner cannot type this body: keep the previous level
        still = {n.domain for n in inlined.graph.node} - {"", "ai.onnx", EXPAND_DOMAIN}
        del inlined.opset_import[:]
        inlined.opset_import.append(helper.make_opsetid("", opset))
        inlined.opset_import.extend(helper.make_opsetid(d, opsets[d]) for d in sorted(still) if d in opsets)
        m = last = inlined
    return last


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _function_body(node: onnx.NodeProto, opset: int, types: dict[str, onnx.TypeProto]) -> onnx.FunctionProto | None:
    schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    # The body reads the node's attributes; give it the schema's defaults for the ones the node leaves out.
    present = {a.name for a in node.attribute}
    for name, attr in schema.attributes.items():
        if name not in present and attr.default_value and attr.default_value.type:
            node.attribute.append(attr.default_value)
    proto = onnx.FunctionProto()
    try:
        if schema.has_function:
            proto.CopyFrom(schema.function_body)
        else:
            input_types = [types.get(i, onnx.TypeProto()) for i in node.input]
            raw = schema.get_context_dependent_function(
                node.SerializeToString(), [t.SerializeToString() for t in input_types]
            )
            proto.ParseFromString(raw)
    except Exception:
        return None
    return proto
