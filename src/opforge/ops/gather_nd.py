"""GatherND: TVM's frontend; opforge fuses the index-normalising kernel into the gather (lower/fusion.py)."""

from __future__ import annotations

import numpy as np

from opforge.ops.base import InputDomain, OpRule


def _indices(d: InputDomain) -> None:
    """Index tuples within the data's dims after batch_dims (negative ones included)."""
    name = d.free(1)
    if not name:
        return
    data, idx = d.shape(0), d.values[name]
    b = d.a.get("batch_dims", 0)
    cols = [d.rng.integers(-data[b + j], data[b + j], size=idx.shape[:-1]) for j in range(idx.shape[-1])]
    d.values[name] = np.stack(cols, axis=-1).astype(idx.dtype)


def _torch(torch, node, consts):
    if any(a.name == "batch_dims" and a.i for a in node.attribute):
        raise NotImplementedError("GatherND batch_dims > 0")
    return lambda data, idx: data[tuple(idx.unbind(-1))]


RULES = [
    OpRule(
        ("GatherND",),
        summary="TVM, its index normalisation fused into the gather (lower/fusion.py)",
        inputs=_indices,
        torch=_torch,
    )
]
