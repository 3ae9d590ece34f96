"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (TVM's converters) and their valid input domain: a target
is a class index in [0, C) or ignore_index. Outside it (a negative target) ONNX's reference indexes from the end
while a GPU kernel reads out of bounds; such inputs are not valid, so they are not drawn."""

from __future__ import annotations

import numpy as np

from opforge.ops.base import InputDomain, OpRule


def _targets(d: InputDomain) -> None:
    """Targets drawn in [0, C), about one in eight replaced by ignore_index when the node has one."""
    name = d.free(1)
    if name is None:
        return
    classes = d.shape(0)[1] if len(d.shape(0)) > 1 else 1
    t = d.values[name]
    drawn = d.rng.integers(0, classes, size=t.shape)
    if "ignore_index" in d.a:
        drawn = np.where(d.rng.random(t.shape) < 0.125, d.a["ignore_index"], drawn)
    d.values[name] = drawn.astype(t.dtype)


RULES = [
    OpRule(
        ("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"),
        lowering="tvm",
        summary="TVM; targets drawn in [0, C) or ignore_index",
        inputs=_targets,
    ),
]
