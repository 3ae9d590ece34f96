"""NonZero, Unique and NonMaxSuppression: output extents that depend on the input values. opforge's own kernels
(opforge.lower.kernels.data_dependent, installed as converters of TVM's ONNX frontend) write the outputs densely and
the extent into a size tensor, an extra plugin output TensorRT reads (IExprBuilder::declareSizeTensor). Compress's
run-time condition takes the same path (opforge.ops.compress)."""

from __future__ import annotations

import numpy as np
import onnx

from opforge.ops.base import InputDomain, OpRule


def _many_zeros(d: InputDomain) -> None:
    """About half the elements zero, so that the count is neither 0 nor everything."""
    name = d.free(0)
    if name is None:
        return
    x = d.values[name]
    keep = d.rng.random(x.shape) < 0.5
    d.values[name] = np.where(keep, x, np.zeros_like(x)).astype(x.dtype)


def _repeated(d: InputDomain) -> None:
    """Values drawn from a few distinct ones, so that Unique finds repeats (rows repeat too, along an axis)."""
    name = d.free(0)
    if name is None:
        return
    x = d.values[name]
    pool = np.unique(x.reshape(-1))[:4] if x.size else x.reshape(-1)
    if pool.size == 0:
        return
    d.values[name] = pool[d.rng.integers(0, pool.size, x.shape)].astype(x.dtype)


def _nms_inputs(d: InputDomain) -> None:
    """Corner boxes with positive extents (some overlapping), scores in [0, 1), IoU threshold 0.5, score threshold
    0.2 where those are drawn: a mix of kept, suppressed and thresholded boxes."""
    boxes = d.free(0)
    if boxes is not None:
        b = d.values[boxes]
        lo = d.rng.uniform(0, 8, (*b.shape[:-1], 2))
        size = d.rng.uniform(0.5, 4, (*b.shape[:-1], 2))
        d.values[boxes] = np.concatenate([lo, lo + size], axis=-1).astype(b.dtype)
    scores = d.free(1)
    if scores is not None:
        d.values[scores] = d.rng.random(d.values[scores].shape).astype(d.values[scores].dtype)
    for pos, value in ((3, 0.5), (4, 0.2)):
        name = d.free(pos)
        if name is not None:
            d.values[name] = np.full(d.values[name].shape, value, d.values[name].dtype)


def always(node: onnx.NodeProto, constants: set[str]) -> bool:
    """The op's output extent always depends on the input values."""
    return True


RULES = [
    OpRule(
        ("NonZero",),
        lowering="kernel",
        summary="opforge's kernel: indices written densely as [rank, K], K into a size tensor (data-dependent shape)",
        inputs=_many_zeros,
        data_dependent=always,
    ),
    OpRule(
        ("Unique",),
        lowering="kernel",
        summary="opforge's kernel: sorted or first-occurrence order, flattened or along an axis; K into a size tensor",
        inputs=_repeated,
        data_dependent=always,
    ),
    OpRule(
        ("NonMaxSuppression",),
        lowering="kernel",
        summary="opforge's kernel (ONNX's reference order and IoU); constant max_output_boxes_per_class bounds K, "
        "written into a size tensor",
        inputs=_nms_inputs,
        data_dependent=always,
    ),
]
