"""Ops defined only on part of the real line: inputs are drawn inside it (positive for logarithms, roots and
reciprocals; (-1, 1) for inverse sine/cosine/tanh; above 1 for inverse cosh)."""

from __future__ import annotations

from opforge.ops.base import OpRule

POSITIVE = (0.1, 4.0)

_TORCH = {
    "Log": "log",
    "Sqrt": "sqrt",
    "Reciprocal": "reciprocal",
    "Rsqrt": "rsqrt",
    "Acos": "acos",
    "Asin": "asin",
    "Atanh": "atanh",
    "Acosh": "acosh",
}


def _torch(torch, node, consts):
    return getattr(torch, _TORCH[node.op_type])


RULES = (
    [OpRule((op,), summary="TVM", value_range=POSITIVE, torch=_torch) for op in ("Log", "Sqrt", "Reciprocal", "Rsqrt")]
    + [OpRule((op,), summary="TVM", value_range=(-0.9, 0.9), torch=_torch) for op in ("Acos", "Asin", "Atanh")]
    + [OpRule(("Acosh",), summary="TVM", value_range=(1.1, 4.0), torch=_torch)]
)
