"""Ops TVM's ONNX frontend converts into something else, so their ONNX function bodies are expanded first:
onnxruntime's contrib Attention instead of ONNX's; LayerNormalization without its Mean and InvStdDev outputs
(checked on the conformance suite)."""

from __future__ import annotations

import onnx

from opforge.ops.base import OpRule


def _layer_norm_stats(node: onnx.NodeProto) -> bool:
    return sum(1 for o in node.output if o) > 1


def _torch_layer_norm(torch, node, consts):
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    axis, eps = a.get("axis", -1), a.get("epsilon", 1e-5)

    def f(x, scale, bias=None):
        shape = x.shape[axis:] if axis >= 0 else x.shape[x.dim() + axis :]
        return torch.nn.functional.layer_norm(x, shape, scale.expand(shape), None if bias is None else bias, eps)

    return f


def _rms_norm_leading_axis(node: onnx.NodeProto) -> bool:
    """TVM's RMSNormalization converter fails when the normalized axes start at 0 (axis 0, or a negative axis that
    may be 0: -2 on a 2-D input, ...); the body is exact there (checked on the conformance cases)."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    return axis == 0 or axis <= -2


RULES = [
    OpRule(
        ("RMSNormalization",),
        lowering="tvm",
        summary="TVM; normalized axes from 0 (or a negative axis below -1) through its function body",
        expand_body=_rms_norm_leading_axis,
    ),
    OpRule(
        ("Attention",),
        lowering="function-body",
        summary="ONNX's function body (TVM's converter is onnxruntime's contrib Attention)",
        expand_body=lambda node: True,
    ),
    OpRule(
        ("LayerNormalization",),
        summary="TVM; with Mean/InvStdDev outputs through its function body",
        expand_body=_layer_norm_stats,
        torch=_torch_layer_norm,
    ),
]
