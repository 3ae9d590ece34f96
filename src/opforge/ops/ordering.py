"""Ops whose index outputs depend on ties (TopK, ArgMax, ArgMin, Sort-like): inputs are drawn distinct, since
with ties the indices are implementation-defined."""

from __future__ import annotations

import numpy as np

from opforge.ops.base import InputDomain, OpRule


def _distinct(d: InputDomain) -> None:
    name = d.free(0)
    if not name:
        return
    x = d.values[name]
    if np.issubdtype(x.dtype, np.floating):
        perm = d.rng.permutation(x.size).reshape(x.shape)
        d.values[name] = (perm.astype(np.float64) / max(x.size, 1) * 4 - 2).astype(x.dtype)


def _torch_topk(torch, node, consts):
    a = {x.name: x for x in node.attribute}
    axis = a["axis"].i if "axis" in a else -1
    largest = a["largest"].i if "largest" in a else 1
    k = int(np.asarray(consts[1]).reshape(-1)[0])

    def f(x, _k):
        v, i = torch.topk(x, k, dim=axis, largest=bool(largest), sorted=True)
        return v, i

    return f


RULES = [
    OpRule(
        ("TopK",),
        lowering="kernel",
        summary="opforge's kernel along a static last axis, k <= 1024 (lower/kernels/topk.py): rows of <= 2048 "
        "sorted whole (bitonic), longer ones radix-selected, one block per row; TVM's full sort otherwise",
        inputs=_distinct,
        torch=_torch_topk,
    ),
    OpRule(("ArgMax", "ArgMin"), summary="TVM", inputs=_distinct),
]
