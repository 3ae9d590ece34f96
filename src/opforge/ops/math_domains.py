"""Ops defined only on part of the real line: inputs are drawn inside it (positive for logarithms, roots and
reciprocals; (-1, 1) for inverse sine/cosine/tanh; above 1 for inverse cosh)."""

from __future__ import annotations

from opforge.ops.base import OpRule

POSITIVE = (0.1, 4.0)

RULES = [
    OpRule(("Log", "Sqrt", "Reciprocal", "Rsqrt"), summary="TVM", value_range=POSITIVE),
    OpRule(("ReduceLogSum", "ReduceLogSumExp"), summary="TVM", value_range=POSITIVE),
    OpRule(("Acos", "Asin", "Atanh"), summary="TVM", value_range=(-0.9, 0.9)),
    OpRule(("Acosh",), summary="TVM", value_range=(1.1, 4.0)),
]
