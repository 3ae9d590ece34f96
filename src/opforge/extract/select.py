"""Choosing the nodes to turn into plugins: by name, by op type, or by a {node name: plugin name} map."""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from opforge.core.errors import UsageError


def select_nodes(
    model: onnx.ModelProto,
    node_names: Iterable[str] | None = None,
    node_types: Iterable[str] | None = None,
    plugin_name_dict: dict[str, str] | None = None,
) -> list[onnx.NodeProto]:
    """The selected nodes in graph order. Names that match no node are an error, naming the first one."""
    graph = model.graph
    by_name = {n.name: n for n in graph.node if n.name}
    wanted = set(node_names or ()) | set(plugin_name_dict or ())
    for name in sorted(wanted):
        if name not in by_name:
            raise UsageError(f"node {name!r} is not in the model (see `opforge inspect` for node names)")
    types = set(node_types or ())
    present = {n.op_type for n in graph.node}
    for t in sorted(types):
        if t not in present:
            raise UsageError(f"op type {t!r} does not occur in the model")
    chosen = [n for n in graph.node if n.name in wanted or n.op_type in types]
    if not chosen:
        raise UsageError("no node selected: give node names, op types or a plugin name map")
    for n in chosen:
        if not n.name:
            raise UsageError(f"a selected {n.op_type} node has no name: name the model's nodes first")
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            raise UsageError(f"node {n.name!r} ({n.op_type}) has a subgraph attribute; control flow is not supported")
    return chosen


def check_unique_names(model: onnx.ModelProto) -> None:
    """ONNX needs node names unique in a graph (the rewritten model would fail onnx.checker): name the first
    duplicate and where it occurs."""
    seen: dict[str, int] = {}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            continue
        if n.name in seen:
            raise UsageError(
                f"node name {n.name!r} is used twice (nodes #{seen[n.name]} and #{i}): ONNX needs unique node names; "
                "rename one"
            )
        seen[n.name] = i


def check_names_exist(model: onnx.ModelProto, node_names: Iterable[str] | None, option: str = "-n") -> None:
    """Every name given on the command line names a node of the model (a UsageError naming the first that does not)."""
    present = {n.name for n in model.graph.node}
    for name in node_names or ():
        if name not in present:
            raise UsageError(f"{option}: node {name!r} is not in the model (see `opforge inspect` for node names)")
