"""The rewritten model: each selected node becomes a node of its plugin's type, everything else is untouched.

The plugin node keeps the node's name, outputs and non-constant inputs; its constant inputs (which the plugin was
specialised for) become attributes, as do the node's own attributes (see opforge.core.fields).

Plugin nodes live in the ONNX domain "opforge" so that onnx.checker accepts the model; TensorRT's ONNX parser sends
a node of any domain whose op type it does not know to its plugin lookup (checked with the TensorRT-RTX parser).
"""

from __future__ import annotations

import onnx
from onnx import helper

from opforge.core.fields import PluginAttr

PLUGIN_DOMAIN = "opforge"


def rewrite_model(
    model: onnx.ModelProto, replacements: dict[str, tuple[str, list[str], list[PluginAttr]]]
) -> onnx.ModelProto:
    """replacements: node name -> (plugin name, tensor input names, attributes)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for i, node in enumerate(graph.node):
        if node.name not in replacements:
            continue
        plugin, inputs, attrs = replacements[node.name]
        new = helper.make_node(plugin, inputs, list(node.output), name=node.name, domain=PLUGIN_DOMAIN)
        new.attribute.extend(a.onnx_attribute() for a in attrs)
        graph.node[i].CopyFrom(new)
    _drop_unused_initializers(graph)
    if replacements and not any(o.domain == PLUGIN_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return out


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
