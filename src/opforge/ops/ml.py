"""ai.onnx.ml ops with an exact expansion into default-domain ops (no function body, no TVM converter)."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

ML = "ai.onnx.ml"


def _binarizer(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    above = e.op("Greater", node.input[0], e.const(a.get("threshold", 0.0)))
    e.op("Where", above, e.const(1.0), e.const(0.0), out=node.output[0])
    return True


def _array_feature_extractor(e: Emitter, node: onnx.NodeProto, _a: dict) -> bool:
    flat = e.op("Reshape", node.input[1], e.const([-1], TensorProto.INT64))
    e.op("Gather", node.input[0], flat, axis=-1, out=node.output[0])
    return True


def _feature_indices(d) -> None:
    """ArrayFeatureExtractor's indices select along the last axis: in [0, size)."""
    name = d.free(1)
    if name:
        size = d.shape(0)[-1]
        d.values[name] = d.rng.integers(0, size, size=d.values[name].shape).astype(d.values[name].dtype)


RULES = [
    OpRule(("Binarizer",), ML, "decompose", "Where(x > threshold, 1, 0)", rewrite=_binarizer),
    OpRule(
        ("ArrayFeatureExtractor",),
        ML,
        "decompose",
        "Gather along the last axis with the flattened indices",
        rewrite=_array_feature_extractor,
        inputs=_feature_indices,
    ),
]
