"""The op registry: everything opforge knows about an ONNX op, one module per op or op family.

Each module of this package (other than base, table and this one) defines `RULES`, a list of OpRule. They are
found by walking the package, so adding an op's knowledge is adding one file. An op with no rule gets TVM's
defaults: `rule_for` returns an empty rule for it.

    from opforge.ops import rule_for
    rule_for(node).inputs       # its input domain, or None
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

import onnx

from opforge.ops.base import OpRule

_NOT_RULES = {"base", "table"}


def _domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


@cache
def all_rules() -> dict[tuple[str, str], OpRule]:
    """(domain, op type) -> rule, over every module of the package. Two rules for one op type are an error."""
    out: dict[tuple[str, str], OpRule] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name in _NOT_RULES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for rule in getattr(module, "RULES", []):
            for op in rule.op_types:
                key = (_domain(rule.domain), op)
                if key in out:
                    raise RuntimeError(f"op registry: {key} has rules in two modules ({module.__name__})")
                out[key] = rule
    return out


@cache
def module_of(domain: str, op_type: str) -> str | None:
    """The registry module holding the op's rule (for docs), or None."""
    rule = all_rules().get((_domain(domain), op_type))
    if rule is None:
        return None
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if rule in getattr(module, "RULES", []):
            return module.__name__
    return None


def rule_for(node: onnx.NodeProto | tuple[str, str]) -> OpRule:
    """The op's rule; for an op without one, the empty rule (TVM's defaults)."""
    domain, op_type = (node.domain, node.op_type) if isinstance(node, onnx.NodeProto) else node
    return all_rules().get((_domain(domain), op_type)) or OpRule((op_type,), _domain(domain))


@cache
def kernel_overrides() -> dict[str, str]:
    """Relax op -> "module:function" of every opforge kernel the registry names (applied during legalization)."""
    out: dict[str, str] = {}
    for rule in all_rules().values():
        for relax_op, ref in rule.kernels.items():
            if out.get(relax_op, ref) != ref:
                raise RuntimeError(f"op registry: two kernels for {relax_op}: {out[relax_op]} and {ref}")
            out[relax_op] = ref
    return out


def apply_rewrites(model: onnx.ModelProto, which=None, for_shapes: bool = False) -> onnx.ModelProto:
    """A copy of the model with every node the registry rewrites (of those `which` selects) replaced by its
    rewrite, in one pass (the nodes a rewrite emits are not rewritten again). The rewrites keep the replaced nodes'
    output names, so the copy also serves to infer shapes through ops ONNX's shape inference does not know
    (`for_shapes`: rules' shape-only stand-ins too)."""
    from onnx import helper

    from opforge.ops.base import Emitter, attrs, elem_types

    m = onnx.ModelProto()
    m.CopyFrom(model)
    types = elem_types(m)
    constants = {t.name for t in m.graph.initializer}
    out, changed = [], False
    for node in m.graph.node:
        rule = rule_for(node)
        rewrite = (rule.rewrite or (rule.shapes if for_shapes else None)) if which is None or which(node) else None
        e = Emitter(m, node, types, constants)
        if rewrite is None or not rewrite(e, node, attrs(node)):
            out.append(node)
            continue
        out.extend(e.nodes)
        changed = True
    if changed:
        del m.graph.node[:]
        m.graph.node.extend(out)
        if not any(o.domain in ("", "ai.onnx") for o in m.opset_import):
            m.opset_import.append(helper.make_opsetid("", onnx.defs.onnx_opset_version()))
    return m


__all__ = ["OpRule", "all_rules", "apply_rewrites", "kernel_overrides", "module_of", "rule_for"]
