"""Cutting one node out of a model into a stand-alone ONNX model with typed, shaped inputs.

Inputs fed by initializers, Constant nodes, or anything computable from them (Shape of a static tensor, ...)
become initializers of the subgraph: their values matter (axes, depth, pads, index tables). The other inputs
keep the types and shapes shape inference gives them; symbolic dimensions stay symbolic.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from opforge.core.errors import OpforgeError, UsageError
from opforge.extract.fold import constant_values, infer_types
from opforge.extract.model_io import opset_of
from opforge.ops import apply_rewrites, rule_for

Dim = int | str
BATCH_DIM = "batch"


@dataclass
class NodeSubgraph:
    node_name: str
    op_type: str
    model: onnx.ModelProto  # the stand-alone model: one node, tensor inputs, constant initializers
    input_names: list[str]  # names in the original model, in node input order (tensor inputs only)
    constant_inputs: dict[int, np.ndarray]  # node input position -> value
    output_names: list[str]
    # A fused group: its nodes (as in the model) and each one's constant inputs; empty for a single node.
    members: list[onnx.NodeProto] = field(default_factory=list)
    member_constants: list[dict[int, np.ndarray]] = field(default_factory=list)

    @property
    def node_names(self) -> list[str]:
        """The model's nodes this subgraph implements."""
        return [n.name for n in self.members] if self.members else [self.node_name]

    @property
    def key(self) -> str:
        """Identical nodes (op, attributes, constants, shapes, dtypes, opset) have the same key."""
        return hashlib.sha256(self.model.SerializeToString(deterministic=True)).hexdigest()[:16]


_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_POSITIVE = re.compile(r"^[1-9][0-9]*$")


def parse_shape_arg(text: str) -> dict[str, list[Dim]]:
    """`x:1x3x224x224,y:batchx16` -> {"x": [1, 3, 224, 224], "y": ["batch", 16]}. Each dimension is a positive
    integer or a symbol (a C identifier); anything else is a UsageError naming the option and the value."""
    out: dict[str, list[Dim]] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise UsageError(f"--input-shapes {text!r}: {item!r} is not NAME:D0xD1x...")
        shape: list[Dim] = []
        for d in dims.split("x") if dims else []:
            if _POSITIVE.match(d):
                shape.append(int(d))
            elif _SYMBOL.match(d):
                shape.append(d)
            else:
                raise UsageError(
                    f"--input-shapes {text!r}: dimension {d!r} of {name!r} is neither a positive integer nor a "
                    "symbol (letters, digits, _), e.g. x:1x3x224x224 or x:batchx16"
                )
        if name in out:
            raise UsageError(f"--input-shapes {text!r}: {name!r} is given twice")
        out[name] = shape
    return out


def check_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[Dim]] | None) -> None:
    """--input-shapes against the model: each name a graph input, each shape of the input's rank where the model
    gives one. A UsageError naming the option, input and value otherwise."""
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = {i.name: i for i in model.graph.input if i.name not in inits}
    for name, shape in (shapes or {}).items():
        if name not in graph_inputs:
            known = ", ".join(list(graph_inputs)[:8]) or "none"
            raise UsageError(
                f"--input-shapes names {name!r}, which is not a graph input of the model (inputs: {known})"
            )
        tt = graph_inputs[name].type.tensor_type
        if tt.HasField("shape") and len(tt.shape.dim) != len(shape):
            given = "x".join(map(str, shape)) or "(scalar)"
            raise UsageError(
                f"--input-shapes {name}:{given} has rank {len(shape)}, but the model's input {name!r} has rank "
                f"{len(tt.shape.dim)}"
            )


def extract_nodes(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    input_shapes: dict[str, list[Dim]] | None = None,
    dynamic_batch: bool = False,
) -> list[NodeSubgraph]:
    """One subgraph per node."""
    return extract_groups(model, [[n] for n in nodes], input_shapes, dynamic_batch)


def extract_each(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], input_shapes: dict[str, list[Dim]] | None = None
) -> list[NodeSubgraph | OpforgeError]:
    """extract_nodes with shapes inferred once, where a node that cannot be cut gets its error instead of failing
    the others."""
    return _extract([[n] for n in nodes], model, input_shapes, False, keep_errors=True)


def extract_groups(
    model: onnx.ModelProto,
    groups: list[list[onnx.NodeProto]],
    input_shapes: dict[str, list[Dim]] | None = None,
    dynamic_batch: bool = False,
) -> list[NodeSubgraph]:
    """One subgraph per group (see opforge.extract.groups): a single node as extract_nodes cuts it, several nodes
    as one fused subgraph whose inputs are the tensors the group reads from outside and whose outputs are the
    tensors it produces for the rest of the model."""
    return _extract(groups, model, input_shapes, dynamic_batch, keep_errors=False)


def _extract(
    groups: list[list[onnx.NodeProto]],
    model: onnx.ModelProto,
    input_shapes: dict[str, list[Dim]] | None,
    dynamic_batch: bool,
    keep_errors: bool,
) -> list:
    """Shapes and constants inferred once for the model, then each group cut; with keep_errors a group that
    cannot be cut gives its OpforgeError in its place."""
    model = _with_input_shapes(model, input_shapes or {}, dynamic_batch)
    types, consts = _types_and_constants(model)
    opset = opset_of(model)
    named = {d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim if d.HasField("dim_param")}
    out: list = []
    for g in groups:
        try:
            if len(g) == 1:
                out.append(_cut(g[0], types, consts, opset, model, named))
            else:
                out.append(_cut_group(g, types, consts, opset, model, named))
        except OpforgeError as e:
            if not keep_errors:
                raise
            out.append(e)
    return out


def _with_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[Dim]], dynamic_batch: bool) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    graph_inputs = {i.name: i for i in m.graph.input if i.name not in inits}
    check_input_shapes(model, shapes)
    _clean_dims(m, graph_inputs)
    # Tools that write contrib ops sometimes leave out their domain's opset import (onnxruntime's transformer
    # optimizer does): ONNX's shape inference then fails the whole model.
    imported = {o.domain for o in m.opset_import}
    for domain in sorted({n.domain for n in m.graph.node} - imported - {"", "ai.onnx"}):
        m.opset_import.append(helper.make_opsetid(domain, 1))
    for name, vi in graph_inputs.items():
        tt = vi.type.tensor_type
        if name in shapes:
            tt.ClearField("shape")
            tt.shape.SetInParent()  # a scalar ("sr:") has a shape with no dims, not an unknown one
            for d in shapes[name]:
                dim = tt.shape.dim.add()
                if isinstance(d, int):
                    dim.dim_value = d
                else:
                    dim.dim_param = d
        if dynamic_batch and tt.HasField("shape") and len(tt.shape.dim) > 0:
            first = tt.shape.dim[0]
            if not first.dim_param:
                first.Clear()
                first.dim_param = BATCH_DIM
    return m


_PLACEHOLDER = re.compile(r"^[^A-Za-z0-9]*$")  # "?", "-1", "": exporters' ways of saying "unknown"


def _clean_dims(m: onnx.ModelProto, graph_inputs: dict[str, onnx.ValueInfoProto]) -> None:
    """Exporters write unknown extents as dim_value -1 or dim_param "?" (paddle2onnx does both). Several "?" would
    become one shape variable, and -1 is no extent at all: on a graph input such a dim gets a name of its own
    (`<input>_<axis>`, which shape inference then carries downstream), elsewhere it is left unknown."""
    for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        for k, d in enumerate(vi.type.tensor_type.shape.dim):
            bad = (d.HasField("dim_value") and d.dim_value < 0) or (
                d.HasField("dim_param") and _PLACEHOLDER.match(d.dim_param)
            )
            if not bad:
                continue
            d.Clear()
            if vi.name in graph_inputs:
                d.dim_param = f"{_dim_name(vi.name)}_{k}"


def _infer_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """ONNX's shape inference; where it stops at ops it does not know (com.microsoft's, ...), on through the op
    registry's decompositions of them (they keep the output names), then onnxruntime's symbolic shape inference."""
    try:
        types = infer_types(model)
    except Exception as e:
        raise OpforgeError(f"ONNX shape inference failed on the model: {str(e).splitlines()[0]}") from None
    if not _untyped(model, types):
        return types
    try:
        rewritten = apply_rewrites(model, lambda n: n.domain not in ("", "ai.onnx"), for_shapes=True)
        for name, t in infer_types(rewritten).items():
            if _known(t) > _known(types.get(name)):
                types[name] = t
    except Exception:
        pass
    # onnxruntime's symbolic inference only for the contrib ops it knows: on standard ops ONNX's is the reference
    # (onnxruntime's guesses an If's output from one branch, whatever the other gives).
    custom = any(n.domain not in ("", "ai.onnx") for n in model.graph.node)
    if custom and _untyped(model, types):
        for name, t in _symbolic_types(model).items():
            if not _has_shape(types.get(name)):
                types[name] = t
    return types


def _types_and_constants(
    model: onnx.ModelProto, rounds: int = 3
) -> tuple[dict[str, onnx.TypeProto], dict[str, np.ndarray]]:
    """Types, shapes and constant values. Where shapes stop at a Reshape whose target shape is computed from
    Shape ops (past an op shape inference learnt about late, like a contrib op), the folded shape values are
    given to shape inference as constants and it runs again."""
    types = _infer_types(model)
    consts = constant_values(model, types)
    for _ in range(rounds):
        if not _untyped(model, types):
            break
        inits = {t.name for t in model.graph.initializer}
        small = {k: v for k, v in consts.items() if k not in inits and v.dtype == np.int64 and v.size <= 64}
        if not small:
            break
        m = onnx.ModelProto()
        m.CopyFrom(model)
        keep = [n for n in m.graph.node if not (n.output and all(o in small for o in n.output if o))]
        del m.graph.node[:]
        m.graph.node.extend(keep)
        m.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in small.items())
        before = sum(_known(t) for t in types.values())
        for name, t in _infer_types(m).items():
            if _known(t) > _known(types.get(name)):
                types[name] = t
        consts = constant_values(model, types)
        if sum(_known(t) for t in types.values()) == before:
            break
    return types, consts


def _known(t: onnx.TypeProto | None) -> int:
    """How much a type says: 0 none, 1 a rank, more for each known extent."""
    if not _has_shape(t):
        return 0
    return 1 + sum(d.HasField("dim_value") for d in t.tensor_type.shape.dim)


def _has_shape(t: onnx.TypeProto | None) -> bool:
    return t is not None and t.HasField("tensor_type") and t.tensor_type.HasField("shape")


def _untyped(model: onnx.ModelProto, types: dict[str, onnx.TypeProto]) -> bool:
    return any(o and not _has_shape(types.get(o)) for n in model.graph.node for o in n.output)


def _symbolic_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """onnxruntime's symbolic shape inference (it knows many com.microsoft ops); empty if it is absent or fails."""
    import os
    import tempfile

    here = os.getcwd()
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        with tempfile.TemporaryDirectory() as scratch:
            os.chdir(scratch)  # where it stops, it saves sym_shape_infer_temp.onnx in the working folder
            try:
                inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)
            finally:
                os.chdir(here)
    except Exception:
        return {}
    if inferred is None:
        return {}
    g = inferred.graph
    return {vi.name: vi.type for vi in [*g.value_info, *g.output]}


def _dims(t: onnx.TypeProto | None) -> list[Dim] | None:
    if t is None or not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "") for d in t.tensor_type.shape.dim]


_IDENT = re.compile(r"[^A-Za-z0-9_]")


def _dim_name(param: str) -> str:
    """A dim_param as a C/Python identifier (it names a shape variable in plans and generated C++)."""
    name = _IDENT.sub("_", param)
    return name if name and not name[0].isdigit() else f"d_{name}"


class _DimNames:
    """A subgraph's own names for unknown extents: unk0, unk1, ... by first use (see _input_shape)."""

    def __init__(self):
        self.count = 0
        self.generated: dict[str, str] = {}  # ONNX's invented dim names (unk__7) -> the subgraph's own

    def fresh(self) -> str:
        self.count += 1
        return f"unk{self.count - 1}"


def _input_shape(
    name: str,
    types: dict[str, onnx.TypeProto],
    where: str,
    model: onnx.ModelProto,
    named: set[str] | frozenset[str],
    dims_seen: _DimNames,
) -> list[Dim]:
    """The shape a subgraph input gets: known extents kept, the model's named dims kept (as identifiers), unknown
    ones and names shape inference invented renamed per subgraph; an OpforgeError saying why when there is none."""
    t = types.get(name)
    if t is None or not t.HasField("tensor_type"):
        raise OpforgeError(
            f"{where}: input {name!r} has no type or shape; give it with --input-shapes {name}:D0xD1x..."
        )
    dims = _dims(t)
    if dims is None and _inputs_static(model):  # --input-shapes would not help: say where inference stopped
        producers = {o: n for n in model.graph.node for o in n.output}
        first, seen = producers.get(name), set()
        while first is not None and first.name not in seen:  # up to where the shapes stop
            seen.add(first.name)
            up = next((i for i in first.input if i in producers and _dims(types.get(i)) is None), None)
            if up is None:
                break
            first = producers[up]
        what = f"{first.op_type} node {first.name!r}" if first is not None else "its producer"
        raise OpforgeError(
            f"{where}: input {name!r} has no shape: ONNX shape inference stops at {what} (its output shape is "
            "not inferred), though every graph input's shape is known"
        )
    if dims is None:
        raise OpforgeError(f"{where}: input {name!r} has no shape; give the graph inputs' shapes with --input-shapes")
    shape: list[Dim] = []
    for d in dims:
        if d == "":  # unknown extent: a fresh symbolic dimension, read at run time
            shape.append(dims_seen.fresh())
        elif isinstance(d, str) and d not in named:
            # Shape inference names each unknown extent it creates anew (unk__0, unk__1, ...; onnxruntime's
            # <node>_o0__d2 or expressions of the inputs' dims): such a name says nothing beyond "equal within
            # this node", so the subgraph names them by first use and identical nodes share one plan.
            if d not in dims_seen.generated:
                dims_seen.generated[d] = dims_seen.fresh()
            shape.append(dims_seen.generated[d])
        else:
            shape.append(d if isinstance(d, int) else _dim_name(d))
    return shape


def _cut(
    node: onnx.NodeProto,
    types: dict[str, onnx.TypeProto],
    consts: dict[str, np.ndarray],
    opset: int,
    model: onnx.ModelProto,
    named: set[str] | frozenset[str] = frozenset(),
) -> NodeSubgraph:
    where = f"node {node.name!r} ({node.op_type})"
    graph_inputs, inits, names = [], [], []
    constant_inputs: dict[int, np.ndarray] = {}
    weights = set(rule_for(node).weights)
    dims_seen = _DimNames()
    for pos, name in enumerate(node.input):
        if not name:
            names.append("")
            continue
        if name in consts and pos in weights:  # stays a run-time input: typed and shaped by its value
            value = consts[name]
            iname = f"in{pos}"
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            graph_inputs.append(helper.make_tensor_value_info(iname, elem, list(value.shape)))
            names.append(iname)
            continue
        if name in consts:
            cname = f"const{pos}"
            inits.append(numpy_helper.from_array(consts[name], cname))
            constant_inputs[pos] = consts[name]
            names.append(cname)
            continue
        shape = _input_shape(name, types, where, model, named, dims_seen)
        t = types[name]
        iname = f"in{pos}"
        graph_inputs.append(helper.make_tensor_value_info(iname, t.tensor_type.elem_type, shape))
        names.append(iname)
    outs = []
    for k, o in enumerate(node.output):
        t = types.get(o)
        elem = t.tensor_type.elem_type if t is not None and t.HasField("tensor_type") else 0
        outs.append(helper.make_tensor_value_info(f"out{k}", elem, None))
    sub_node = helper.make_node(
        node.op_type,
        names,
        [f"out{k}" for k in range(len(node.output))],
        domain=node.domain or None,
        name="node",
    )
    sub_node.attribute.extend(node.attribute)
    graph = helper.make_graph([sub_node], "opforge_node", graph_inputs, outs, initializer=inits)
    imports = [helper.make_opsetid("", opset)]
    if node.domain not in ("", "ai.onnx"):  # the node's own domain, at the model's version of it
        version = next((o.version for o in model.opset_import if o.domain == node.domain), 1)
        imports.append(helper.make_opsetid(node.domain, version))
    sub = helper.make_model(graph, opset_imports=imports, producer_name="opforge")
    sub.ir_version = model.ir_version
    _infer_outputs(sub)
    return NodeSubgraph(
        node_name=node.name,
        op_type=node.op_type,
        model=sub,
        input_names=[n for pos, n in enumerate(node.input) if n and pos not in constant_inputs],
        constant_inputs=constant_inputs,
        output_names=list(node.output),
    )


def _cut_group(
    group: list[onnx.NodeProto],
    types: dict[str, onnx.TypeProto],
    consts: dict[str, np.ndarray],
    opset: int,
    model: onnx.ModelProto,
    named: set[str] | frozenset[str] = frozenset(),
) -> NodeSubgraph:
    where = "fused nodes " + ", ".join(repr(n.name) for n in group)
    members = {n.name for n in group}  # selected nodes are named (opforge.extract.select)
    produced = {o for n in group for o in n.output if o}
    outside = {i for n in model.graph.node if n.name not in members for i in n.input}
    outside |= {o.name for o in model.graph.output}
    rename: dict[str, str] = {"": ""}
    graph_inputs, inits, input_names, member_constants = [], [], [], []
    dims_seen = _DimNames()
    for n in group:
        mine: dict[int, np.ndarray] = {}
        weights = set(rule_for(n).weights)
        for pos, name in enumerate(n.input):
            if name in consts and pos not in weights:
                mine[pos] = consts[name]
            if not name or name in produced or name in rename:
                continue
            if name in consts and pos in weights:  # stays a run-time input (the initializer), as in _cut
                value = consts[name]
                rename[name] = f"in{len(graph_inputs)}"
                elem = helper.np_dtype_to_tensor_dtype(value.dtype)
                graph_inputs.append(helper.make_tensor_value_info(rename[name], elem, list(value.shape)))
                input_names.append(name)
                continue
            if name in consts:
                rename[name] = f"c{len(inits)}"
                inits.append(numpy_helper.from_array(consts[name], rename[name]))
                continue
            shape = _input_shape(name, types, where, model, named, dims_seen)
            rename[name] = f"in{len(graph_inputs)}"
            graph_inputs.append(helper.make_tensor_value_info(rename[name], types[name].tensor_type.elem_type, shape))
            input_names.append(name)
        member_constants.append(mine)
    outs, output_names, sub_nodes = [], [], []
    for k, n in enumerate(group):
        for o in n.output:
            if not o:
                continue
            if o in outside:
                rename[o] = f"out{len(outs)}"
                t = types.get(o)
                elem = t.tensor_type.elem_type if t is not None and t.HasField("tensor_type") else 0
                outs.append(helper.make_tensor_value_info(rename[o], elem, None))
                output_names.append(o)
            else:
                rename[o] = f"t{k}_{len(rename)}"
        sub_node = helper.make_node(
            n.op_type, [rename[i] for i in n.input], [rename.get(o, "") for o in n.output], domain=n.domain or None
        )
        sub_node.name = f"node{k}"
        sub_node.attribute.extend(n.attribute)
        sub_nodes.append(sub_node)
    if not outs:
        raise OpforgeError(f"{where}: the group produces nothing the model uses")
    graph = helper.make_graph(sub_nodes, "opforge_fused", graph_inputs, outs, initializer=inits)
    sub = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="opforge")
    sub.ir_version = model.ir_version
    _infer_outputs(sub)
    return NodeSubgraph(
        node_name=group[0].name,
        op_type="+".join(n.op_type for n in group),
        model=sub,
        input_names=input_names,
        constant_inputs={},
        output_names=output_names,
        members=[_copy(n) for n in group],
        member_constants=member_constants,
    )


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out


def _inputs_static(model: onnx.ModelProto) -> bool:
    inits = {t.name for t in model.graph.initializer}
    return all(
        i.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in i.type.tensor_type.shape.dim)
        for i in model.graph.input
        if i.name not in inits
    )


def _infer_outputs(sub: onnx.ModelProto) -> None:
    """Give the subgraph's outputs the types and shapes ONNX infers for them (kept symbolic)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(sub, strict_mode=False, data_prop=True)
    except Exception:
        return  # the frontend and the reference work without them
    by_name = {o.name: o for o in inferred.graph.output}
    for o in sub.graph.output:
        got = by_name.get(o.name)
        if got is not None and got.type.tensor_type.HasField("shape"):
            o.CopyFrom(got)


def check_dtypes(subs: list[NodeSubgraph]) -> None:
    """Every tensor a plugin would take or give has a dtype a TensorRT tensor can hold (core.dtypes' `trt`):
    an OpforgeError naming the node and the tensor otherwise. Runs before lowering."""
    from opforge.core.dtypes import from_onnx

    for sub in subs:
        inits = {t.name for t in sub.model.graph.initializer}
        tensors = [
            (orig, vi) for orig, vi in zip(sub.input_names, (v for v in sub.model.graph.input if v.name not in inits))
        ] + list(zip(sub.output_names, sub.model.graph.output))
        for orig, vi in tensors:
            elem = vi.type.tensor_type.elem_type
            if not elem:
                continue
            label = onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() else elem
            try:
                ok = from_onnx(elem).trt is not None
            except KeyError:
                ok = False
            if not ok:
                raise OpforgeError(
                    f"node {sub.node_name!r} ({sub.op_type}): tensor {orig!r} is {label}, which a TensorRT tensor "
                    "cannot hold (TensorRT has no such dtype)"
                )
