"""Resize (and Upsample, which TVM imports as the same Relax op; its nearest mode with whole-number scales, which
TVM's converter fails on, is written as one Gather per scaled axis).

- Refused: antialias=1 (TVM's frontend ignores antialiasing); a scale that is not a whole number on a symbolic
  axis (ONNX maps coordinates with the scale, TVM with the size ratio, which differ for some sizes).
- Rewritten: `axes` and `keep_aspect_ratio_policy` (TVM's frontend takes neither) become scales or sizes for every
  axis, when they are constants.
- Separable (static shapes, float data, not tf_crop_and_resize): where TVM's resize2d computes something else than
  ONNX — antialias, half_pixel_symmetric, or given scales that differ from output size / input size (ONNX maps
  coordinates with the given scale; TVM, and opforge's kernel, with the size ratio) — the resize is written one
  axis at a time, as ONNX's reference computes it: a MatMul by the axis's interpolation matrix (linear, cubic) or a
  Gather of the axis's source indices (nearest). Each matrix is ONNX's reference Resize applied to the identity
  (one row per input position), so coefficients, edge clamping, exclude_outside and antialiasing are the
  reference's own. Matrices are capped at MAX_MATRIX elements (a dense matrix costs out x in per row).
- Kernel: opforge's NCHW nearest/linear Resize (lower/kernels/resize.py: a shared-memory column table, columns
  reused across a thread's outputs and rows, 16-byte stores, ONNX's coordinate and rounding rules); other modes
  and layouts go to TVM's own legalization.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import FLOATS, Emitter, OpRule, text


def _refuse(node: onnx.NodeProto, a: dict) -> str | None:
    return "Resize antialias=1: TVM's frontend ignores antialiasing" if a.get("antialias", 0) else None


def _scales_on_symbolic_axes(e: Emitter, node: onnx.NodeProto, a: dict) -> str | None:
    """ONNX maps coordinates with a given scale; TVM's resize (and opforge's kernel) with output size / input size,
    the same only when floor(in * scale) / in == scale. On a symbolic axis that holds for every size only when the
    scale is a whole number; otherwise the node is refused (the separable rewrite needs static shapes)."""
    if len(node.input) < 3 or not node.input[2]:
        return None
    scales = e.initializer(node.input[2])
    vi = e.value_info(node.input[0])
    if scales is None or not scales.size or vi is None:
        return None
    dims = vi.type.tensor_type.shape.dim
    for k, ax in enumerate(ax % len(dims) for ax in a.get("axes", range(len(dims)))):
        s = float(np.float32(scales.reshape(-1)[k]))
        if not dims[ax].HasField("dim_value") and s != int(s):
            return (
                f"Resize scale {s:g} on a symbolic axis: ONNX maps coordinates with the scale, TVM with the size "
                "ratio (they differ where in * scale is not whole); give sizes, or static shapes"
            )
    return None


def _full_rank(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """Axes left out keep scale 1 and the full roi; a policy fixes one scale for the given axes and the sizes it
    yields (ONNX: round(scale * input size))."""
    policy = text(a.get("keep_aspect_ratio_policy"), "stretch")
    rank = e.rank(node.input[0])
    if ("axes" not in a and policy == "stretch") or rank is None:
        return False

    def const(pos: int) -> np.ndarray | None:
        return e.initializer(node.input[pos]) if len(node.input) > pos and node.input[pos] else None

    axes = [x % rank for x in a.get("axes", range(rank))]
    roi, scales, sizes = const(1), const(2), const(3)
    if (scales is None) == (sizes is None):
        return False
    in_shape = e.static_shape(node.input[0])
    if scales is None and in_shape is None:
        return False
    new_inputs = [node.input[0], "", "", ""]
    if roi is not None and roi.size:
        full = np.array([0.0] * rank + [1.0] * rank, roi.dtype)
        for k, ax in enumerate(axes):
            full[ax], full[rank + ax] = roi[k], roi[len(axes) + k]
        new_inputs[1] = e.const(full, onnx.helper.np_dtype_to_tensor_dtype(roi.dtype))
    if scales is not None:
        full = np.ones(rank, scales.dtype)
        full[axes] = scales
        new_inputs[2] = e.const(full, onnx.helper.np_dtype_to_tensor_dtype(scales.dtype))
    else:
        full = np.array(in_shape, np.int64)
        if policy == "stretch":
            full[axes] = sizes
        else:
            ratios = [sizes[k] / in_shape[ax] for k, ax in enumerate(axes)]
            scale = min(ratios) if policy == "not_larger" else max(ratios)
            for ax in axes:
                full[ax] = int(np.floor(scale * in_shape[ax] + 0.5))
        new_inputs[3] = e.const(full, TensorProto.INT64)
    while new_inputs and not new_inputs[-1]:
        new_inputs.pop()
    kept = {k: v for k, v in a.items() if k not in ("axes", "keep_aspect_ratio_policy")}
    e.op("Resize", *new_inputs, out=node.output[0], **kept)
    return True


MAX_MATRIX = 1 << 18
_AXIS_ATTRS = (
    "mode",
    "coordinate_transformation_mode",
    "cubic_coeff_a",
    "exclude_outside",
    "antialias",
    "nearest_mode",
)


def _axis_resize(a: dict, data: np.ndarray, scale: float | None, size: int | None, opset: int) -> np.ndarray:
    """ONNX's reference Resize of a 2-D float64 `data` along its last axis only (by `scale` or to `size`)."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    rows, n = data.shape
    inputs = ["x", "", "scales"] if scale is not None else ["x", "", "", "sizes"]
    kept = {k: v for k, v in a.items() if k in _AXIS_ATTRS}
    node = helper.make_node("Resize", inputs, ["y"], **kept)
    f64, i64 = TensorProto.DOUBLE, TensorProto.INT64
    graph = helper.make_graph(
        [node],
        "axis",
        [helper.make_tensor_value_info("x", f64, [rows, n])],
        [helper.make_tensor_value_info("y", f64, None)],
        [
            helper.make_tensor("scales", TensorProto.FLOAT, [2], [1.0, scale])
            if scale is not None
            else helper.make_tensor("sizes", i64, [2], [rows, size])
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return np.asarray(ReferenceEvaluator(model).run(None, {"x": data})[0])


def _separable(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """The resize as per-axis MatMuls (linear, cubic) or Gathers (nearest) where TVM's resize2d differs from ONNX."""
    x = node.input[0]
    shape, elem = e.static_shape(x), e.types.get(x)
    mode = text(a.get("mode"), "nearest")
    coord = text(a.get("coordinate_transformation_mode"), "half_pixel")
    policy = text(a.get("keep_aspect_ratio_policy"), "stretch")
    if shape is None or elem not in FLOATS or coord == "tf_crop_and_resize" or e.opset() < 11:
        return False
    if mode not in ("nearest", "linear", "cubic") or 0 in shape:
        return False

    def const(pos: int) -> np.ndarray | None:
        return e.initializer(node.input[pos]) if len(node.input) > pos and node.input[pos] else None

    rank = len(shape)
    axes = [ax % rank for ax in a.get("axes", range(rank))]
    scales, sizes = const(2), const(3)
    if scales is not None and scales.size == 0:
        scales = None
    if (scales is None) == (sizes is None) or (sizes is not None and policy != "stretch"):
        return False
    per_axis: dict[int, tuple[float | None, int | None]] = {}
    mismatch = False
    for k, ax in enumerate(axes):
        if scales is not None:
            s32 = np.float32(scales[k])
            per_axis[ax] = (float(s32), None)
            out = int(float(s32) * shape[ax])
            mismatch |= out == 0 or np.float32(out) / np.float32(shape[ax]) != s32
        else:
            per_axis[ax] = (None, int(sizes[k]))
    if not (a.get("antialias", 0) or coord == "half_pixel_symmetric" or mismatch):
        return False
    y = x
    for ax, (scale, size) in sorted(per_axis.items()):
        n = shape[ax]
        if mode == "nearest":
            src = _axis_resize(a, np.arange(n, dtype=np.float64)[None, :], scale, size, e.opset())[0]
            if len(src) * n > MAX_MATRIX or len(src) == 0:
                return False
            if len(src) == n and np.array_equal(src, np.arange(n)):
                continue
            y = e.op("Gather", y, e.const(src.astype(np.int64), TensorProto.INT64), axis=ax)
            continue
        m = _axis_resize(a, np.eye(n, dtype=np.float64), scale, size, e.opset()).T  # [out, in]
        if m.size > MAX_MATRIX or m.shape[0] == 0:
            return False
        if m.shape == (n, n) and np.array_equal(m, np.eye(n)):
            continue
        if ax == rank - 1:
            y = e.op("MatMul", y, e.const(m.T, elem))
        elif ax == rank - 2:
            y = e.op("MatMul", e.const(m, elem), y)
        else:
            perm = list(range(rank))
            perm[ax], perm[-1] = perm[-1], perm[ax]
            moved = e.op("MatMul", e.op("Transpose", y, perm=perm), e.const(m.T, elem))
            y = e.op("Transpose", moved, perm=perm)
    e.op("Identity", y, out=node.output[0])
    return True


def _upsample_repeat(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """Upsample nearest with constant whole-number scales repeats each element s times along each axis (ONNX's
    reference: np.repeat): one Gather of source indices i // s per scaled axis."""
    scales = e.initializer(node.input[1]) if len(node.input) > 1 else a.get("scales")
    shape = e.static_shape(node.input[0])
    if text(a.get("mode"), "nearest") != "nearest" or scales is None or shape is None:
        return False
    scales = np.asarray(scales, np.float64).reshape(-1)
    if len(scales) != len(shape) or not np.array_equal(scales, np.floor(scales)) or (scales < 1).any():
        return False
    y = node.input[0]
    for ax, (n, sc) in enumerate(zip(shape, scales.astype(np.int64))):
        if sc > 1:
            src = np.arange(n * sc, dtype=np.int64) // sc
            y = e.op("Gather", y, e.const(src, TensorProto.INT64), axis=ax)
    e.op("Identity", y, out=node.output[0])
    return True


def _rewrite(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    return _separable(e, node, a) or _full_rank(e, node, a)


def _torch(torch, node: onnx.NodeProto, consts: dict[int, np.ndarray]):
    """Half-pixel nearest (round_prefer_floor) or linear, NCHW, given sizes or scales (ONNX's defaults)."""
    import torch.nn.functional as F

    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    mode = text(a.get("mode"), "nearest")
    # Python numbers, not numpy arrays, inside what torch.compile traces (dynamo asserted on `sizes.size`).
    sizes = consts.get(3)
    given = [int(v) for v in sizes[-2:]] if sizes is not None and sizes.size else None
    scales = consts.get(2)
    factors = [float(v) for v in scales[-2:]] if given is None else None

    def out_hw(x):
        if given is not None:
            return given
        return [math.floor(x.shape[k + 2] * factors[k]) for k in range(2)]

    if mode == "linear":
        return lambda x, *_: F.interpolate(x, size=out_hw(x), mode="bilinear", align_corners=False)

    def nearest(x, *_):
        oh, ow = out_hw(x)

        def table(n_in, n_out):
            # ONNX half_pixel + round_prefer_floor: the source index of each output index
            src = (torch.arange(n_out, device=x.device, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
            return torch.clamp(torch.ceil(src - 0.5), 0, n_in - 1).long()

        return x[:, :, table(x.shape[2], oh)[:, None], table(x.shape[3], ow)[None, :]]

    return nearest


_KERNEL = {"relax.image.resize2d": "opforge.lower.kernels.resize:override"}

RULES = [
    OpRule(
        ("Resize",),
        lowering="kernel",
        summary="opforge's NCHW nearest/linear kernel (lower/kernels/resize.py); axes/aspect policy made full-rank; "
        "antialias refused",
        refuse=_refuse,
        refuse_in_graph=_scales_on_symbolic_axes,
        rewrite=_rewrite,
        kernels=_KERNEL,
        torch=_torch,
    ),
    OpRule(
        ("Upsample",),
        summary="nearest with whole-number scales as Gathers (ONNX's repeat); else TVM, through opforge's Resize "
        "kernel where it applies",
        rewrite=_upsample_repeat,
        kernels=_KERNEL,
    ),
]
