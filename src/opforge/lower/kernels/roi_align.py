"""RoiAlign as ONNX defines it (onnx/reference/ops/op_roi_align.py), for both modes and both coordinate modes.

TVM's `topi.vision.roi_align` takes, in max mode, the max over sampling points of the bilinearly *interpolated*
value. ONNX's definition (and onnxruntime's) takes, per sampling point, the max of the four *weighted corners*
`max(w1*v1, w2*v2, w3*v3, w4*v4)`, then the max over the sampling points; a sampling point outside the map
(y < -1, y > H, x < -1 or x > W) contributes 0, and a bin with no sampling points (an empty box in half_pixel mode)
is 0 in both modes. Avg mode is TVM's arithmetic, restated here so both modes share one definition.

What reaches `relax.vision.roi_align` from TVM's ONNX frontend: rois of shape (R, 5) = (batch index, x1, y1, x2, y2),
with -0.5 already added to the coordinates when coordinate_transformation_mode is half_pixel (then `aligned` is
True: the box size is not clamped to 1), and `spatial_scale` multiplying those coordinates. opforge's registry
(opforge.ops.roi_align) scales the rois before TVM and passes spatial_scale 1, so `roi * 1` here is ONNX's
`x * spatial_scale - 0.5`. Layout NCHW only (the ONNX op's layout); NHWC keeps TVM's legalization.
"""

from __future__ import annotations

import functools

import tvm
from tvm import te, tirx

from opforge.core.errors import LoweringError
from opforge.lower.kernels import roi_align_plane
from opforge.lower.kernels.data_dependent import on_gpu
from opforge.lower.kernels.kernel_ir import rounded
from opforge.lower.tir_text import dtype_of


def box_geometry(roi, ct: str, pooled, sample_ratio: int, aligned: bool, gpu: bool, spatial_scale: float = 1.0):
    """(batch index, start_h, start_w, bin_h, bin_w, grid_h, grid_w) of a box from its 5 values (batch index, x1,
    y1, x2, y2), in the coordinate type `ct`, each operation rounded as ONNX's reference rounds it."""
    ph_n, pw_n = pooled

    def f(v) -> tirx.PrimExpr:
        return tirx.const(v, ct)

    def mul(a, b):
        return rounded("mul", a, b, gpu)

    roi = [roi[0]] + [tirx.Cast(ct, r) if dtype_of(r) != ct else r for r in roi[1:]]
    start_w, start_h = mul(roi[1], f(spatial_scale)), mul(roi[2], f(spatial_scale))
    roi_w, roi_h = mul(roi[3], f(spatial_scale)) - start_w, mul(roi[4], f(spatial_scale)) - start_h
    if not aligned:
        roi_w, roi_h = te.max(roi_w, f(1.0)), te.max(roi_h, f(1.0))
    bin_h, bin_w = roi_h / f(ph_n), roi_w / f(pw_n)
    if sample_ratio > 0:
        grid_h = grid_w = tirx.const(sample_ratio, "int32")
    else:
        grid_h = te.ceil(roi_h / f(ph_n)).astype("int32")
        grid_w = te.ceil(roi_w / f(pw_n)).astype("int32")
    return roi[0].astype("int32"), start_h, start_w, bin_h, bin_w, grid_h, grid_w


def axis_point(start, bin_size, p, r, grid, ct: str, gpu: bool):
    """The coordinate of sampling point r of bin p on one axis: start + p * bin + ((r + 0.5) * bin) / grid, left
    to right, each operation rounded on its own. The sampling coordinates round each operation in ONNX's order, as
    ONNX's reference and onnxruntime do (both agree bit for bit): a bilinear read is ill-conditioned in its
    coordinate, and an fma there moved outputs of a 200x272 map with rois in image coordinates by 6e-5
    (kernel_ir.rounded)."""
    step = rounded("mul", tirx.Cast(ct, r) + tirx.const(0.5, ct), bin_size, gpu) / tirx.Cast(ct, grid)
    return rounded("add", rounded("add", start, rounded("mul", tirx.Cast(ct, p), bin_size, gpu), gpu), step, gpu)


def roi_align_te(
    data: te.Tensor,
    rois: te.Tensor,
    pooled: tuple[int, int],
    spatial_scale: float,
    max_mode: bool,
    sample_ratio: int,
    aligned: bool,
) -> te.Tensor:
    """(R, C, pooled_h, pooled_w) of data (N, C, H, W) pooled over rois (R, 5), ONNX's definition."""
    _, channels, height, width = data.shape
    num_roi = rois.shape[0]
    ph_n, pw_n = (int(p) for p in pooled)
    # Coordinates compute in the rois' type, widened to float32 for half types: ONNX's reference computes them in
    # float64; in float16 a coordinate near 8 moves in steps of 1/128 (off by 0.0078 in max mode on the H100).
    ct = "float32" if str(rois.dtype) in ("float16", "bfloat16") else str(rois.dtype)
    vt = str(data.dtype)
    acc = "float32" if vt in ("float16", "bfloat16") else vt

    gpu = on_gpu()

    def f(v) -> tirx.PrimExpr:
        return tirx.const(v, ct)

    def geometry(i):
        return box_geometry([rois[i][k] for k in range(5)], ct, (ph_n, pw_n), sample_ratio, aligned, gpu, spatial_scale)

    def corners(n, c, y, x):
        """The four weighted corners of sampling point (y, x), and whether the point lies outside the map."""
        outside = tirx.any(y < f(-1.0), x < f(-1.0), y > tirx.Cast(ct, height), x > tirx.Cast(ct, width))
        y = te.min(te.max(y, f(0.0)), tirx.Cast(ct, height - 1))
        x = te.min(te.max(x, f(0.0)), tirx.Cast(ct, width - 1))
        y_low, x_low = y.astype("int32"), x.astype("int32")
        y_high = te.min(y_low + 1, height - 1)
        x_high = te.min(x_low + 1, width - 1)
        ly, lx = y - tirx.Cast(ct, y_low), x - tirx.Cast(ct, x_low)
        hy, hx = f(1.0) - ly, f(1.0) - lx

        def v(yy, xx):
            return tirx.Cast(acc, data[n, c, yy, xx])

        def w(e):
            return tirx.Cast(acc, e)

        terms = [
            w(hy * hx) * v(y_low, x_low),
            w(hy * lx) * v(y_low, x_high),
            w(ly * hx) * v(y_high, x_low),
            w(ly * lx) * v(y_high, x_high),
        ]
        return outside, terms

    def body(i, c, ph, pw):
        n, start_h, start_w, bin_h, bin_w, grid_h, grid_w = geometry(i)
        empty = grid_h * grid_w <= 0
        rh = te.reduce_axis((0, te.max(grid_h, 1)), name="rh")
        rw = te.reduce_axis((0, te.max(grid_w, 1)), name="rw")
        y = axis_point(start_h, bin_h, ph, rh, grid_h, ct, gpu)
        x = axis_point(start_w, bin_w, pw, rw, grid_w, ct, gpu)
        outside, terms = corners(n, c, y, x)
        zero = tirx.const(0.0, acc)
        if max_mode:
            value = te.max(te.max(terms[0], terms[1]), te.max(terms[2], terms[3]))
            sample = tirx.if_then_else(tirx.any(empty, outside), zero, value)
            return te.max(sample, axis=[rh, rw])
        count = tirx.Cast(acc, te.max(grid_h * grid_w, 1))
        value = (terms[0] + terms[1] + terms[2] + terms[3]) / count
        sample = tirx.if_then_else(tirx.any(empty, outside), zero, value)
        return te.sum(sample, axis=[rh, rw])

    pooled_acc = te.compute((num_roi, channels, ph_n, pw_n), body, name="roi_align_onnx_acc")
    if acc == vt:
        return pooled_acc
    return te.compute(pooled_acc.shape, lambda *i: tirx.Cast(vt, pooled_acc(*i)), name="roi_align_onnx")


def legalize(threads: int = 256, unroll: int = 2):
    """A LegalizeOps override for relax.vision.roi_align (NCHW: ONNX's definition, with each plane in shared memory
    where roi_align_plane applies, any sampling ratio; else a thread per output; NHWC: TVM's)."""
    default = tvm.ir.Op.get("relax.vision.roi_align").get_attr("FLegalize")

    def f(bb, call):
        a = call.attrs
        if str(a.layout) != "NCHW":
            return default(bb, call)
        mode = a.mode.decode() if isinstance(a.mode, bytes) else str(a.mode)
        data, rois = call.args[0], call.args[1]
        pooled = [int(p) for p in a.pooled_size]
        layout = roi_align_plane.layout_for(
            None if data.ty.shape is None else list(data.ty.shape),
            str(rois.ty.dtype),
            str(data.ty.dtype),
            int(a.sample_ratio),
        )
        if layout is not None:
            plane = functools.partial(
                roi_align_plane.roi_align_plane_te,
                pooled=pooled,
                spatial_scale=float(a.spatial_scale),
                max_mode=mode == "max",
                sample_ratio=int(a.sample_ratio),
                aligned=bool(a.aligned),
                threads=threads,
                layout=layout,
                unroll=unroll,
            )
            return bb.call_te(plane, data, rois, primfunc_name_hint="roi_align")
        if int(a.sample_ratio) <= 0 and on_gpu():
            # roi_align_te's grid extent depends on the boxes, which TVM cannot state as a loop bound on the GPU.
            raise LoweringError(
                "RoiAlign with an adaptive sampling grid (sampling_ratio 0) runs only in opforge's plane kernel, "
                f"which takes float32 and float16 maps, not {data.ty.dtype}"
            )
        return bb.call_te(
            roi_align_te,
            data,
            rois,
            pooled,
            float(a.spatial_scale),
            mode == "max",
            int(a.sample_ratio),
            bool(a.aligned),
            primfunc_name_hint="roi_align",
        )

    return f


def override(threads: int, config=None):
    """The op registry's entry point for relax.vision.roi_align (opforge.ops.roi_align): the tuned elements per
    thread are the outputs whose loads the plane kernel issues together."""
    return legalize(threads, config.per_thread if config else 2)
