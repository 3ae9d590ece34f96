"""`opforge inspect`: which nodes TensorRT's ONNX parser rejects, why, and whether opforge can make a plugin."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx
from onnx import TensorProto, helper, numpy_helper

from opforge import trt_parser
from opforge.core.errors import OpforgeError
from opforge.extract import load_model
from opforge.extract.subgraph import Dim, check_input_shapes, extract_each


@dataclass
class RejectedNode:
    index: int
    name: str
    op_type: str
    reason: str
    plugin: bool | None  # None: not tried
    plugin_note: str = ""


@dataclass
class ModelError:
    """A parser failure of the model as a whole (no node): an initializer TensorRT cannot hold, ..."""

    reason: str
    note: str  # what it means and what opforge can (mostly cannot) do about it


@dataclass
class InspectReport:
    model: str
    parser: str
    nodes: int
    rejected: list[RejectedNode]
    # Runs of consecutive nodes (graph order) TensorRT runs, and the rejected ones between them.
    subgraphs: list[dict] = field(default_factory=list)  # [{"supported", "first", "last", "nodes"}]
    model_errors: list[ModelError] = field(default_factory=list)

    @property
    def parser_accepts(self) -> bool:
        return not self.rejected and not self.model_errors

    def as_dict(self) -> dict:
        return asdict(self)


def name_nodes(model: onnx.ModelProto) -> int:
    """Give unnamed nodes a stable name (<op>_<index>) so that they can be selected; returns how many."""
    count = 0
    taken = {n.name for n in model.graph.node}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)
            count += 1
    return count


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read, from the enclosing scopes too."""
    out: set[str] = set()
    for a in node.attribute:
        for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            for n in g.node:
                out.update(i for i in n.input if i)
                out |= _subgraph_inputs(n)
    return out


def sort_nodes(model: onnx.ModelProto) -> bool:
    """Put the graph's nodes in topological order (onnxruntime's quantize_dynamic leaves some models unsorted, which
    onnx.checker rejects); stable: nodes already in order keep it. Returns whether anything moved."""
    nodes = list(model.graph.node)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
    deps = [
        {producer[i] for i in {*n.input, *_subgraph_inputs(n)} if i in producer and producer[i] != k}
        for k, n in enumerate(nodes)
    ]
    if all(d < k for k, ds in enumerate(deps) for d in ds):
        return False  # already in order (the usual case)
    order: list[int] = []
    placed: set[int] = set()
    pending = list(range(len(nodes)))
    while pending:
        ready = [k for k in pending if deps[k] <= placed]
        if not ready:  # a cycle: leave the model as it is
            return False
        take = ready[0]
        order.append(take)
        placed.add(take)
        pending.remove(take)
    if order == list(range(len(nodes))):
        return False
    del model.graph.node[:]
    model.graph.node.extend(nodes[k] for k in order)
    return True


def check_graph_input_shapes(model: onnx.ModelProto, given: dict[str, list[Dim]] | None) -> None:
    inits = {t.name for t in model.graph.initializer}
    missing = [
        i.name
        for i in model.graph.input
        if i.name not in inits and not i.type.tensor_type.HasField("shape") and i.name not in (given or {})
    ]
    if missing:
        raise OpforgeError(
            f"graph input(s) {', '.join(missing)} have no shape: give them with --input-shapes {missing[0]}:D0xD1x..."
        )


def inspect_model(
    model_or_path: onnx.ModelProto | str | Path,
    input_shapes: dict[str, list[Dim]] | None = None,
    try_lowering: bool = True,
    progress=None,
) -> InspectReport:
    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else load_model(model_or_path)
    label = "<model>" if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    check_input_shapes(model, input_shapes)
    name_nodes(model)
    parsed, model_errors = parse_nodes(model)
    by_name = {n.name: (i, n) for i, n in enumerate(model.graph.node)}
    rejected: list[RejectedNode] = []
    seen = set()
    for e in parsed.errors:
        index, node = by_name.get(e.node, (e.index, None))
        if node is None and 0 <= e.index < len(model.graph.node):
            node = model.graph.node[e.index]
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        rejected.append(RejectedNode(index, node.name, node.op_type, e.reason.strip().splitlines()[0][:300], None))
    if try_lowering:
        from opforge.core.quiet import quiet_native
        from opforge.lower import lower_subgraph

        # Shapes are inferred once for all the rejected nodes, and identical nodes (one subgraph key) lowered once.
        try:
            subs = extract_each(model, [by_name[r.name][1] for r in rejected], input_shapes)
        except OpforgeError as err:
            subs = [err] * len(rejected)
        tried: dict[str, tuple[bool, str, str]] = {}  # key -> (lowers, error, the node it was tried on)
        for k, (r, sub) in enumerate(zip(rejected, subs)):
            if progress:
                progress(f"trying to lower {r.name} ({r.op_type}) [{k + 1}/{len(rejected)}]")
            if isinstance(sub, OpforgeError):
                r.plugin, r.plugin_note = False, str(sub)
                continue
            if sub.key not in tried:
                try:
                    with quiet_native():
                        lower_subgraph(sub)
                    tried[sub.key] = (True, "", r.name)
                except OpforgeError as err:
                    tried[sub.key] = (False, str(err), r.name)
            ok, note, first = tried[sub.key]
            r.plugin, r.plugin_note = ok, note.replace(repr(first), repr(r.name))
    return InspectReport(
        label,
        parsed.parser,
        len(model.graph.node),
        rejected,
        partition(len(model.graph.node), {r.index for r in rejected}),
        model_errors,
    )


# Initializer types TensorRT cannot import, and a type holding every value of each (for the node-level re-parse).
_WIDER = {
    TensorProto.UINT16: TensorProto.INT32,
    TensorProto.INT16: TensorProto.INT32,
    TensorProto.UINT32: TensorProto.INT64,
    TensorProto.UINT64: TensorProto.INT64,
}
_INITIALIZER = re.compile(r"Failed to import initializer: (\S+)\s*$")


def model_level(e: trt_parser.ParserError) -> bool:
    return e.index < 0 and not e.node and not e.op_type


def parse_nodes(model: onnx.ModelProto, rounds: int = 16) -> tuple[trt_parser.ParseReport, list[ModelError]]:
    """TensorRT's parser on the model. Where it fails the model as a whole at an initializer it cannot import
    (uint32, ...), it checks no node at all: the failure is recorded, and the model is parsed again with that
    initializer widened (uint32 -> int64) so that the nodes still get their verdicts."""
    errors: list[ModelError] = []
    m = model
    parsed = trt_parser.parse_any(m)
    for _ in range(rounds):
        whole = [e for e in parsed.errors if model_level(e)]
        if not whole:
            break
        widened = False
        for e in whole:
            reason = e.reason.strip().splitlines()[0][:300]
            found = _INITIALIZER.search(e.reason.strip().splitlines()[0])
            init = next((t for t in m.graph.initializer if found and t.name == found.group(1)), None)
            if init is None:
                errors.append(ModelError(reason, "the parser fails the model as a whole; opforge cannot change this"))
                continue
            users = [n.name or n.op_type for n in model.graph.node if init.name in n.input]
            dtype = TensorProto.DataType.Name(init.data_type).lower()
            note = (
                f"initializer {init.name!r} is {dtype}, a type TensorRT cannot hold (it fails the whole model, "
                f"before any node); used by {', '.join(users[:6]) or 'no node'}"
                f"{' ...' if len(users) > 6 else ''}. opforge does not change the model's types: it goes away only "
                "where every node using it becomes a plugin (constant inputs become plugin fields); else store it "
                "as a type TensorRT holds (int32/int64)"
            )
            errors.append(ModelError(reason, note))
            if init.data_type in _WIDER:
                if m is model:
                    m = onnx.ModelProto()
                    m.CopyFrom(model)
                    init = next(t for t in m.graph.initializer if t.name == init.name)
                wide = numpy_helper.to_array(init).astype(helper.tensor_dtype_to_np_dtype(_WIDER[init.data_type]))
                init.CopyFrom(numpy_helper.from_array(wide, init.name))
                widened = True
        if not widened:
            break
        parsed = trt_parser.parse_any(m)
    parsed.errors = [e for e in parsed.errors if not model_level(e)]
    return parsed, errors


def partition(n_nodes: int, rejected: set[int]) -> list[dict]:
    runs: list[dict] = []
    for i in range(n_nodes):
        ok = i not in rejected
        if runs and runs[-1]["supported"] == ok:
            runs[-1]["last"] = i
            runs[-1]["nodes"] += 1
        else:
            runs.append({"supported": ok, "first": i, "last": i, "nodes": 1})
    return runs
