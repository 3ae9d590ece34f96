"""Fresh random inputs that are valid for the op, drawn from its input domain in the op registry (opforge.ops):
in-range indices, positive values where a log/sqrt needs them, distinct values where ties make outputs ambiguous.

Never zeros: zeros hide unwritten outputs and wrong indexing.
"""

from __future__ import annotations

import numpy as np
import onnx

from opforge.core import dtypes
from opforge.ops import rule_for
from opforge.ops.base import InputDomain


def random_tensor(
    rng: np.random.Generator, shape: tuple[int, ...], dtype: str, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Uniform values without zeros: floats in value_range (default [-2, 2]); integers in [-100, 100] clipped to
    the type, or [1, 100] when value_range is positive; bools half true."""
    np_dtype = dtypes.numpy_dtype(dtype)
    positive = value_range is not None and value_range[0] > 0
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if np.issubdtype(np_dtype, np.integer):
        info = np.iinfo(np_dtype)
        lo, hi = (1, min(info.max, 100)) if positive else (max(info.min, -100), min(info.max, 100))
        out = rng.integers(lo, hi + 1, size=shape, dtype=np.int64)
        out[out == 0] = 1  # no accidental zeros
        return out.astype(np_dtype)
    if value_range is not None:
        vals = rng.uniform(*value_range, size=shape)
        vals[np.abs(vals) < 1e-3] = 0.5 * (value_range[0] + value_range[1]) or 0.5
        return vals.astype(np_dtype)
    vals = rng.uniform(-2.0, 2.0, size=shape)
    vals[np.abs(vals) < 1e-3] = 0.5
    return vals.astype(np_dtype)


def make_inputs(model: onnx.ModelProto, shapes: list[tuple[int, ...]], rng: np.random.Generator) -> list[np.ndarray]:
    """Inputs of a subgraph (graph inputs in order) with the given concrete shapes. Each input takes the value range
    of the first node reading it that has one; each node's input-domain hook then fixes the inputs it reads directly
    (in a fused group, a hook that needs the shape of an intermediate tensor cannot apply and is skipped)."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    types = {i.name: dtypes.from_onnx(i.type.tensor_type.elem_type).name for i in model.graph.input}
    by_name = dict(zip(names, shapes))
    rules = [(node, rule_for(node)) for node in model.graph.node]
    ranges = {}
    for node, rule in rules:
        for i in node.input:
            if rule.value_range is not None:
                ranges.setdefault(i, rule.value_range)
    values = {name: random_tensor(rng, by_name[name], types[name], ranges.get(name)) for name in names}
    for node, rule in rules:
        if rule.inputs is None:
            continue
        try:
            rule.inputs(InputDomain(node, values, inits, rng))
        except KeyError:
            if len(rules) == 1:
                raise
    return [values[n] for n in names]
