"""Gather, GatherElements, ScatterElements: indices drawn within the indexed axis (negative ones included).
ScatterElements (and Scatter, MaxUnpool's rewrite: every relax.scatter_elements) with reduction none/add runs
opforge's parallel kernel (lower/kernels/scatter_elements.py); TVM's is one serial loop over the updates."""

from __future__ import annotations

import numpy as np
import onnx

from opforge.ops.base import InputDomain, NoValidInputs, OpRule, text


def _axis_indices(d: InputDomain) -> None:
    name = d.free(1)
    if not name:
        return
    data = d.shape(0)
    axis = d.a.get("axis", 0) % len(data)
    idx = d.values[name]
    d.values[name] = d.rng.integers(-data[axis], data[axis], size=idx.shape).astype(idx.dtype)


def _scatter_indices(d: InputDomain) -> None:
    """In range; without a reduction, targets along the axis are distinct within each line: the spec says indices
    "should not have duplicate entries" there (the result would depend on the order of the writes). Shapes with
    more indices along the axis than the data has positions admit no such input: NoValidInputs."""
    data, idx_shape = d.shape(0), d.shape(1)
    axis = d.a.get("axis", 0) % len(data)
    unique = d.a.get("reduction", b"none") in (b"none", "none")
    if unique and idx_shape[axis] > data[axis]:
        raise NoValidInputs(
            f"{d.node.op_type}: {idx_shape[axis]} indices along axis {axis} into {data[axis]} positions repeat one"
        )
    name = d.free(1)
    if not name:
        return
    idx = d.values[name]
    if not unique:
        d.values[name] = d.rng.integers(-data[axis], data[axis], size=idx.shape).astype(idx.dtype)
        return
    lines = np.moveaxis(np.empty(idx.shape, np.int64), axis, -1)
    flat = lines.reshape(-1, lines.shape[-1])
    for r in range(flat.shape[0]):
        flat[r] = d.rng.choice(data[axis], size=flat.shape[1], replace=False)
    d.values[name] = np.moveaxis(flat.reshape(lines.shape), -1, axis).astype(idx.dtype)


def _torch_gather(torch, node, consts):
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)

    def f(data, idx):
        idx = torch.where(idx < 0, idx + data.shape[axis], idx)
        return torch.index_select(data, axis, idx.reshape(-1)).reshape(
            (*data.shape[:axis], *idx.shape, *data.shape[axis + 1 :])
        )

    return f


def _torch_gather_elements(torch, node, consts):
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return lambda data, idx: torch.gather(data, axis, torch.where(idx < 0, idx + data.shape[axis], idx))


def _torch_scatter_elements(torch, node, consts):
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    axis = a.get("axis", 0)
    reduce = {"none": None, "add": "sum", "mul": "prod", "max": "amax", "min": "amin"}[text(a.get("reduction"), "none")]

    def f(data, idx, upd):
        idx = torch.where(idx < 0, idx + data.shape[axis], idx)
        if reduce is None:
            return data.scatter(axis, idx, upd)
        return data.scatter_reduce(axis, idx, upd, reduce, include_self=True)

    return f


RULES = [
    OpRule(("Gather",), summary="TVM", inputs=_axis_indices, torch=_torch_gather),
    OpRule(("GatherElements",), summary="TVM", inputs=_axis_indices, torch=_torch_gather_elements),
    OpRule(
        ("ScatterElements",),
        lowering="kernel",
        summary="opforge's parallel kernels (lower/kernels/scatter_elements.py) for none/add: tiles of fibers "
        "scattered in shared memory in one launch where they fit, else copy + atomics; TVM's for mul/min/max",
        kernels={"relax.scatter_elements": "opforge.lower.kernels.scatter_elements:override"},
        inputs=_scatter_indices,
        torch=_torch_scatter_elements,
    ),
    OpRule(("Scatter",), summary="as ScatterElements (deprecated form)", inputs=_scatter_indices),
]
