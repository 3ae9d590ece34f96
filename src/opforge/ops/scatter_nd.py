"""ScatterND: opforge's parallel kernel (lower/kernels/scatter_nd.py: 16 bytes per thread, one thread per slice
vector, atomics for add; TVM's is serial)."""

from __future__ import annotations

import numpy as np

from opforge.ops.base import InputDomain, NoValidInputs, OpRule


def _indices(d: InputDomain) -> None:
    """Unique targets: with duplicates, reduction="none" leaves the result order-dependent (the spec forbids them
    there: NoValidInputs when the shapes need more targets than the data has)."""
    data, idx_shape = d.shape(0), d.shape(1)
    k = idx_shape[-1]
    n = int(np.prod(idx_shape[:-1]))
    space = int(np.prod(data[:k]))
    if n > space and d.a.get("reduction", b"none") in (b"none", "none"):
        raise NoValidInputs(f"ScatterND: {n} update slices into {space} targets repeat one")
    name = d.free(1)
    if not name:
        return
    idx = d.values[name]
    flat = d.rng.choice(space, size=n, replace=False) if n <= space else d.rng.integers(0, space, size=n)
    d.values[name] = np.stack(np.unravel_index(flat, data[:k]), axis=-1).reshape(idx.shape).astype(idx.dtype)


def _torch(torch, node, consts):
    reduction = next((a.s.decode() for a in node.attribute if a.name == "reduction"), "none")
    if reduction not in ("none", "add"):
        raise NotImplementedError(f"ScatterND reduction {reduction}")

    def f(data, idx, upd):
        return data.index_put(tuple(idx.unbind(-1)), upd, accumulate=reduction == "add")

    return f


RULES = [
    OpRule(
        ("ScatterND",),
        lowering="kernel",
        summary="opforge's parallel kernel (lower/kernels/scatter_nd.py) for none/add; TVM's for mul/min/max",
        kernels={"relax.scatter_nd": "opforge.lower.kernels.scatter_nd:override"},
        inputs=_indices,
        torch=_torch,
    )
]
