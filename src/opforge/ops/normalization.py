"""Normalizations: LayerNormalization (with its Mean/InvStdDev outputs through its function body, which TVM's
converter leaves out), GroupNormalization, RMSNormalization, InstanceNormalization."""

from __future__ import annotations

import numpy as np
import onnx

from opforge.ops.base import InputDomain, NoValidInputs, OpRule


def _attrs(node: onnx.NodeProto) -> dict:
    return {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}


def _layer_norm_stats(node: onnx.NodeProto) -> bool:
    return sum(1 for o in node.output if o) > 1


def _rms_norm_leading_axis(node: onnx.NodeProto) -> bool:
    """TVM's RMSNormalization converter fails when the normalized axes start at 0 (axis 0, or a negative axis that
    may be 0: -2 on a 2-D input, ...); the body is exact there (checked on the conformance cases)."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    return axis == 0 or axis <= -2


def _scale_fits_normalized_shape(d: InputDomain) -> None:
    """Scale (and B) must broadcast to the normalized shape X.shape[axis:] (RMSNormalization's text;
    LayerNormalization's function body reshapes them to one row of that shape's size, so there they hold that many
    elements or one).
    ONNX's reference broadcasts a larger scale against all of X; such a node is not valid, so it is not drawn."""
    x = d.shape(0)
    axis = d.a.get("axis", -1) % len(x)
    normalized = tuple(x[axis:])
    for pos in (1, 2):
        if len(d.node.input) <= pos or not d.node.input[pos]:
            continue
        s = tuple(d.shape(pos))
        fits = len(s) <= len(normalized) and all(a in (1, b) for a, b in zip(s[::-1], normalized[::-1]))
        if d.node.op_type == "LayerNormalization":
            fits = fits and int(np.prod(s)) in (1, int(np.prod(normalized)))
        if not fits:
            raise NoValidInputs(
                f"{d.node.op_type}: input {pos} of shape {list(s)} does not fit the normalized shape {list(normalized)}"
            )


def _torch_layer_norm(torch, node, consts):
    a = _attrs(node)
    axis, eps = a.get("axis", -1), a.get("epsilon", 1e-5)

    def f(x, scale, bias=None):
        shape = x.shape[axis % x.dim() :]
        return torch.nn.functional.layer_norm(x, shape, scale.expand(shape), None if bias is None else bias, eps)

    return f


def _torch_group_norm(torch, node, consts):
    """ONNX GroupNormalization (opset 21): scale and bias per channel, statistics per group."""
    a = _attrs(node)
    groups, eps = a["num_groups"], a.get("epsilon", 1e-5)
    return lambda x, scale, bias: torch.nn.functional.group_norm(x, groups, scale, bias, eps)


def _torch_rms_norm(torch, node, consts):
    a = _attrs(node)
    axis, eps = a.get("axis", -1), a.get("epsilon", 1e-5)

    def f(x, scale):
        shape = x.shape[axis % x.dim() :]
        return torch.nn.functional.rms_norm(x, shape, scale.expand(shape), eps)

    return f


def _torch_instance_norm(torch, node, consts):
    eps = _attrs(node).get("epsilon", 1e-5)
    return lambda x, scale, bias: torch.nn.functional.instance_norm(x, weight=scale, bias=bias, eps=eps)


RULES = [
    OpRule(
        ("LayerNormalization",),
        summary="TVM; with Mean/InvStdDev outputs through its function body",
        expand_body=_layer_norm_stats,
        inputs=_scale_fits_normalized_shape,
        torch=_torch_layer_norm,
    ),
    OpRule(
        ("GroupNormalization",),
        lowering="kernel",
        summary="opforge's converter for static shapes: one kernel over the (N, G, C/G*spatial) view "
        "(lower/kernels/group_norm.py); otherwise TVM",
        torch=_torch_group_norm,
    ),
    OpRule(
        ("RMSNormalization",),
        summary="TVM; normalized axes from 0 (or a negative axis below -1) through its function body",
        expand_body=_rms_norm_leading_axis,
        inputs=_scale_fits_normalized_shape,
        torch=_torch_rms_norm,
    ),
    OpRule(
        ("InstanceNormalization",),
        lowering="kernel",
        summary="opforge's converter for static shapes: GroupNormalization's kernel, one channel per group; "
        "otherwise TVM",
        torch=_torch_instance_norm,
    ),
]
