"""Einsum (TVM's frontend)."""

from __future__ import annotations

import onnx

from opforge.ops.base import OpRule, text


def _torch(torch, node, consts):
    eq = text(next(onnx.helper.get_attribute_value(x) for x in node.attribute if x.name == "equation"))
    return lambda *xs: torch.einsum(eq, *xs)


RULES = [OpRule(("Einsum",), summary="TVM", torch=_torch)]
