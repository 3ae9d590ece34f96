"""Fusion groups: selected nodes that feed each other become one plugin (one plan, as few kernels as TVM's fusion
allows), so a chain of rejected nodes costs one plugin launch sequence instead of one per node.

A group is a connected set of selected nodes (producer -> consumer edges between selected nodes) that is convex:
no path leaves the group through an unselected node and comes back into it, which would make the fused node
depend on its own output. Groups that are not convex are split back into single nodes. A node whose output extent
is data-dependent (its plugin writes a size tensor: NonZero, Unique, ...) is not fused with its consumers.
"""

from __future__ import annotations

import onnx


def fusion_groups(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> list[list[onnx.NodeProto]]:
    """The selected nodes partitioned into groups, each in graph order; groups ordered by their first node."""
    order = {id(n): k for k, n in enumerate(model.graph.node)}
    selected = {id(n) for n in nodes}
    producer = {o: n for n in model.graph.node for o in n.output if o}
    parent = {id(n): id(n) for n in nodes}
    constants = {t.name for t in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output
    }

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for n in nodes:
        for i in n.input:
            p = producer.get(i)
            if p is not None and id(p) in selected and not _data_dependent(p, constants):
                parent[find(id(n))] = find(id(p))
    by_root: dict[int, list[onnx.NodeProto]] = {}
    for n in sorted(nodes, key=lambda n: order[id(n)]):
        by_root.setdefault(find(id(n)), []).append(n)
    out: list[list[onnx.NodeProto]] = []
    for group in by_root.values():
        if len(group) > 1 and not _convex(model, group):
            out += [[n] for n in group]
        else:
            out.append(group)
    return sorted(out, key=lambda g: order[id(g[0])])


def _data_dependent(node: onnx.NodeProto, constants: set[str]) -> bool:
    from opforge.ops import rule_for

    test = rule_for(node).data_dependent
    return bool(test and test(node, constants))


def _convex(model: onnx.ModelProto, group: list[onnx.NodeProto]) -> bool:
    """No unselected node both depends on the group and feeds it."""
    members = {id(n) for n in group}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # Unselected nodes reachable from the group's outputs.
    seen: set[int] = set()
    stack = [c for n in group for o in n.output for c in consumers.get(o, []) if id(c) not in members]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        for o in n.output:
            for c in consumers.get(o, []):
                if id(c) in members:
                    return False
                stack.append(c)
    return True
