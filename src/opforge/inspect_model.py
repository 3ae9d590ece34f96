"""`opforge inspect`: which nodes TensorRT's ONNX parser rejects, why, and whether opforge can make a plugin."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from opforge import trt_parser
from opforge.core.errors import OpforgeError
from opforge.extract import extract_nodes, load_model
from opforge.extract.subgraph import Dim, check_input_shapes


@dataclass
class RejectedNode:
    index: int
    name: str
    op_type: str
    reason: str
    plugin: bool | None  # None: not tried
    plugin_note: str = ""


@dataclass
class InspectReport:
    model: str
    parser: str
    nodes: int
    rejected: list[RejectedNode]
    # Runs of consecutive nodes (graph order) TensorRT runs, and the rejected ones between them.
    subgraphs: list[dict] = field(default_factory=list)  # [{"supported", "first", "last", "nodes"}]

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
    parsed = trt_parser.parse_any(model)
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

        for k, r in enumerate(rejected):
            if progress:
                progress(f"trying to lower {r.name} ({r.op_type}) [{k + 1}/{len(rejected)}]")
            try:
                sub = extract_nodes(model, [by_name[r.name][1]], input_shapes)[0]
                with quiet_native():
                    lower_subgraph(sub)
                r.plugin = True
            except OpforgeError as err:
                r.plugin, r.plugin_note = False, str(err)
    return InspectReport(
        label,
        parsed.parser,
        len(model.graph.node),
        rejected,
        partition(len(model.graph.node), {r.index for r in rejected}),
    )


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
