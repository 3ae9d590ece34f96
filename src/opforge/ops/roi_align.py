"""RoiAlign: TVM's frontend applies the half-pixel offset before scaling, (x - 0.5) * spatial_scale, where ONNX
computes x * spatial_scale - 0.5 (off by 0.375 at scale 0.25; torchvision agrees with ONNX). opforge scales the
rois before TVM and passes spatial_scale 1, so TVM's arithmetic becomes ONNX's: (x * s) - 0.5.

Max mode: TVM takes the max of the bilinearly interpolated values; ONNX the max of the weighted corners
max(w1*v1, .., w4*v4) per sampling point, then over the sampling points. relax.vision.roi_align is legalized by
opforge's kernels, ONNX's definition for both modes: each map plane held in shared memory by one block that pools
every box from it, for fixed and adaptive sampling ratios alike (opforge.lower.kernels.roi_align_plane); one thread
per output reading the map from global memory where no plane fits (float64, a symbolic half-precision map).

Input domain: boxes (x1, y1, x2, y2) in image coordinates (the feature map's size / spatial_scale), x1 <= x2 and
y1 <= y2, mostly inside the image with some reaching past its edge; batch indices in [0, N).
"""

from __future__ import annotations

import numpy as np
import onnx

from opforge.ops.base import Emitter, InputDomain, OpRule, attrs, text


def _prescale_rois(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    scale = float(a.get("spatial_scale", 1.0))
    if scale == 1.0:
        return False
    x, rois, batch = node.input
    elem = e.types.get(rois, onnx.TensorProto.FLOAT)
    scaled = e.op("Mul", rois, e.const(scale, elem))
    e.op("RoiAlign", x, scaled, batch, out=node.output[0], **{**a, "spatial_scale": 1.0})
    return True


def _boxes(d: InputDomain) -> None:
    n, _c, h, w = d.shape(0)
    scale = float(d.a.get("spatial_scale", 1.0))
    img_h, img_w = h / scale, w / scale
    if d.free(1):
        rois = d.values[d.node.input[1]]
        k = rois.shape[0]
        # Corners inside the image, widths from a tenth of a pixel to the whole image; a quarter of the boxes
        # start up to 10% outside (the samples there read zero in ONNX's definition).
        x1 = d.rng.uniform(0, img_w, k)
        y1 = d.rng.uniform(0, img_h, k)
        x2 = x1 + d.rng.uniform(0.1, img_w, k) * d.rng.uniform(0.05, 1.0, k)
        y2 = y1 + d.rng.uniform(0.1, img_h, k) * d.rng.uniform(0.05, 1.0, k)
        out = d.rng.random(k) < 0.25
        x1[out] -= 0.1 * img_w * d.rng.random(out.sum())
        y1[out] -= 0.1 * img_h * d.rng.random(out.sum())
        d.values[d.node.input[1]] = np.stack([x1, y1, x2, y2], axis=1).astype(rois.dtype)
    if d.free(2):
        idx = d.values[d.node.input[2]]
        d.values[d.node.input[2]] = d.rng.integers(0, n, size=idx.shape).astype(idx.dtype)


def _torch_roi_align(torch, node: onnx.NodeProto, consts: dict):
    """torchvision.ops.roi_align: ONNX's avg mode in both coordinate modes (aligned=True is half_pixel: x * s - 0.5;
    aligned=False clamps the box to at least one pixel, as output_half_pixel does), the same bilinear rules (a
    sampling point past the map's edge by more than one pixel reads 0). Max mode has no torchvision counterpart
    (its roi_align averages). torchvision travels to the GPU host as a wheel (scripts/gpu_run.sh)."""
    a = attrs(node)
    if text(a.get("mode"), "avg") != "avg":
        raise NotImplementedError("RoiAlign max mode: torchvision's roi_align only averages")
    try:
        from torchvision.ops import roi_align
    except Exception as e:  # not installed, or built for another torch (its operators fail to register)
        raise NotImplementedError(f"RoiAlign: torchvision cannot be imported ({type(e).__name__}: {e})") from e
    aligned = text(a.get("coordinate_transformation_mode"), "half_pixel") == "half_pixel"
    size = (int(a.get("output_height", 1)), int(a.get("output_width", 1)))
    scale, ratio = float(a.get("spatial_scale", 1.0)), int(a.get("sampling_ratio", 0))

    def f(x, rois, batch_indices):
        boxes = torch.cat([batch_indices.to(rois.dtype)[:, None], rois], dim=1)
        return roi_align(x, boxes, size, spatial_scale=scale, sampling_ratio=ratio, aligned=aligned)

    return f


RULES = [
    OpRule(
        ("RoiAlign",),
        lowering="kernel",
        summary="opforge's kernels: each map plane in shared memory (any sampling ratio), else a thread per "
        "output; ONNX's max of weighted corners; rois scaled first (x*s - 0.5)",
        rewrite=_prescale_rois,
        kernels={"relax.vision.roi_align": "opforge.lower.kernels.roi_align:override"},
        inputs=_boxes,
        torch=_torch_roi_align,
        torch_note="torchvision.ops.roi_align: avg mode only",
        # FPN detectors use scales 1/4 .. 1/32 of the image; both coordinate modes, both pooling modes; sampling
        # ratios adaptive (ONNX's default 0, Detectron2's ROIAlignV2: the plane kernel's per-box grids), 1, 2
        # (torchvision's MultiScaleRoIAlign) and an odd 3 (the plane kernel's tables read 8 bytes at a time then).
        fuzz_grid={
            "spatial_scale": (1.0, 0.5, 0.25, 0.125, 0.0625),
            "coordinate_transformation_mode": ("half_pixel", "output_half_pixel"),
            "mode": ("avg", "max"),
            "sampling_ratio": (0, 1, 2, 3),
        },
    )
]
