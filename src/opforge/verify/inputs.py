"""Fresh random inputs that are valid for the op: in-range indices, positive values where a log/sqrt needs them.

Never zeros: zeros hide unwritten outputs and wrong indexing.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from opforge import dtypes

_POSITIVE_OPS = {"Log", "Sqrt", "Reciprocal", "Pow", "ReduceLogSum", "ReduceLogSumExp", "Rsqrt"}


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def random_tensor(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, positive: bool = False) -> np.ndarray:
    np_dtype = dtypes.numpy_dtype(dtype)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if np.issubdtype(np_dtype, np.integer):
        info = np.iinfo(np_dtype)
        lo, hi = (1, min(info.max, 100)) if positive else (max(info.min, -100), min(info.max, 100))
        out = rng.integers(lo, hi + 1, size=shape, dtype=np.int64)
        out[out == 0] = 1  # no accidental zeros
        return out.astype(np_dtype)
    if positive:
        return rng.uniform(0.1, 4.0, size=shape).astype(np_dtype)
    vals = rng.uniform(-2.0, 2.0, size=shape)
    vals[np.abs(vals) < 1e-3] = 0.5
    return vals.astype(np_dtype)


def make_inputs(model: onnx.ModelProto, shapes: list[tuple[int, ...]], rng: np.random.Generator) -> list[np.ndarray]:
    """Inputs of a one-node subgraph (graph inputs in order) with the given concrete shapes."""
    node = model.graph.node[0]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    types = {i.name: dtypes.from_onnx(i.type.tensor_type.elem_type).name for i in model.graph.input}
    by_name = dict(zip(names, shapes))
    values: dict[str, np.ndarray] = {}
    positive = node.op_type in _POSITIVE_OPS
    for name in names:
        values[name] = random_tensor(rng, by_name[name], types[name], positive)
    _fix_indices(node, values, inits, rng)
    return [values[n] for n in names]


def _shape(name: str, values: dict, inits: dict) -> tuple[int, ...]:
    return (values[name] if name in values else inits[name]).shape


def _fix_indices(node: onnx.NodeProto, values: dict, inits: dict, rng: np.random.Generator) -> None:
    """Overwrite index-like inputs with values valid for the data they index."""
    op, ins = node.op_type, list(node.input)

    def free(pos: int) -> str | None:
        return ins[pos] if len(ins) > pos and ins[pos] in values else None

    if op == "GatherND" and free(1):
        data = _shape(ins[0], values, inits)
        idx = values[ins[1]]
        b = _attr(node, "batch_dims", 0)
        k = idx.shape[-1]
        cols = [rng.integers(-data[b + j], data[b + j], size=idx.shape[:-1]) for j in range(k)]
        values[ins[1]] = np.stack(cols, axis=-1).astype(idx.dtype)
    elif op == "ScatterND" and free(1):
        data = _shape(ins[0], values, inits)
        idx = values[ins[1]]
        k = idx.shape[-1]
        n = int(np.prod(idx.shape[:-1]))
        space = int(np.prod(data[:k]))
        # Unique targets: with duplicates, reduction="none" leaves the result order-dependent.
        flat = rng.choice(space, size=n, replace=False) if n <= space else rng.integers(0, space, size=n)
        values[ins[1]] = np.stack(np.unravel_index(flat, data[:k]), axis=-1).reshape(idx.shape).astype(idx.dtype)
    elif op in ("Gather", "GatherElements") and free(1):
        data = _shape(ins[0], values, inits)
        axis = _attr(node, "axis", 0) % len(data)
        idx = values[ins[1]]
        values[ins[1]] = rng.integers(-data[axis], data[axis], size=idx.shape).astype(idx.dtype)
    elif op == "OneHot" and free(0):
        depth = int(np.asarray(values.get(ins[1], inits.get(ins[1]))).reshape(-1)[0])
        idx = values[ins[0]]
        values[ins[0]] = rng.integers(-depth, depth, size=idx.shape).astype(idx.dtype)
    elif op in ("TopK", "ArgMax", "ArgMin", "Sort") and free(0):
        # Distinct values: ties make the index outputs implementation-defined.
        x = values[ins[0]]
        if np.issubdtype(x.dtype, np.floating):
            perm = rng.permutation(x.size).reshape(x.shape)
            values[ins[0]] = (perm.astype(np.float64) / max(x.size, 1) * 4 - 2).astype(x.dtype)
