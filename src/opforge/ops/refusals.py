"""Attributes TVM's frontend ignores, so its kernels would compute something else: such nodes are refused with a
reason rather than built wrong (each found by a conformance case that came out wrong)."""

from __future__ import annotations

from opforge.ops.base import OpRule


def _space_to_depth(node, a):
    if a.get("mode", b"DCR") != b"DCR":
        return "SpaceToDepth mode CRD: TVM's frontend ignores the mode attribute"
    return None


def _batch_norm(node, a):
    if a.get("training_mode", 0):
        return "BatchNormalization training_mode=1: TVM's frontend implements inference mode only"
    return None


def _conv_transpose(node, a):
    return "ConvTranspose output_shape: TVM's frontend ignores it (give pads instead)" if "output_shape" in a else None


RULES = [
    OpRule(("SpaceToDepth",), summary="TVM; mode CRD refused (TVM ignores it)", refuse=_space_to_depth),
    OpRule(("BatchNormalization",), summary="TVM; training_mode=1 refused", refuse=_batch_norm),
    OpRule(("ConvTranspose",), summary="TVM; output_shape refused (give pads)", refuse=_conv_transpose),
]
