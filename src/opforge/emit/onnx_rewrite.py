"""The rewritten model: each selected node (or fused group of nodes) becomes a node of its plugin's type,
everything else is untouched.

The plugin node keeps the node's name, outputs and non-constant inputs; its constant inputs (which the plugin was
specialised for) become attributes, as do the node's own attributes (see opforge.core.fields). A fused group becomes
one node named after its first member, reading the group's inputs and writing the outputs the rest of the model uses.

Plugin nodes live in the ONNX domain "opforge" so that onnx.checker accepts the model; TensorRT's ONNX parser sends
a node of any domain whose op type it does not know to its plugin lookup (checked with the TensorRT-RTX parser).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from opforge.core.fields import PluginAttr

PLUGIN_DOMAIN = "opforge"


@dataclass
class Replacement:
    """One plugin node replacing `nodes` (one node, or a fused group in graph order)."""

    plugin: str
    nodes: list[str]
    inputs: list[str]
    outputs: list[str]
    attrs: list[PluginAttr]


def rewrite_model(model: onnx.ModelProto, replacements: list[Replacement]) -> onnx.ModelProto:
    """The model with each replacement's nodes replaced by one plugin node; nodes are put back in a topological
    order (a fused node sits where its last member was, unless a consumer of an early member came before it)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    by_first = {r.nodes[0]: r for r in replacements}
    absorbed = {name for r in replacements for name in r.nodes[1:]}
    nodes = []
    for node in graph.node:
        if node.name in absorbed:
            continue
        r = by_first.get(node.name)
        if r is None:
            nodes.append(node)
            continue
        new = helper.make_node(r.plugin, r.inputs, r.outputs, name=node.name, domain=PLUGIN_DOMAIN)
        new.attribute.extend(a.onnx_attribute() for a in r.attrs)
        nodes.append(new)
    del graph.node[:]
    graph.node.extend(_topological(nodes, graph))
    _drop_unused_initializers(graph)
    if replacements and not any(o.domain == PLUGIN_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return out


def _topological(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes in an order where every input is produced before use, as close to the given order as possible."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    produced = {o for n in nodes for o in n.output}
    pending, order = list(nodes), []
    while pending:
        for k, n in enumerate(pending):
            if all(i in available or i not in produced for i in n.input):
                order.append(n)
                available.update(n.output)
                del pending[k]
                break
        else:
            return nodes  # a cycle: leave the order to onnx.checker, which names it
    return order


def _read(nodes) -> set[str]:
    """Every name the nodes read, inside their subgraphs (If/Loop/Scan bodies read the outer scope) too."""
    out: set[str] = set()
    for n in nodes:
        out.update(n.input)
        for a in n.attribute:
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                out |= _read(g.node)
    return out


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Initializers only the replaced nodes read now live in plugin attributes: drop them, and the graph inputs
    that merely declared them (models of IR version < 4 list initializers as inputs too)."""
    used = _read(graph.node) | {o.name for o in graph.output}
    init_names = {t.name for t in graph.initializer}
    keep = [t for t in graph.initializer if t.name in used]
    inputs = [i for i in graph.input if i.name in used or i.name not in init_names]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.input[:]
    graph.input.extend(inputs)
