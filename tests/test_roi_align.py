"""RoiAlign through opforge's kernels (opforge.lower.kernels.roi_align, .roi_align_plane), against ONNX's reference:
both modes, both coordinate transformation modes, spatial scales 1 .. 1/16, run by TVM on the CPU (llvm) with the
registry's rewrites and kernels applied exactly as for CUDA; planes split into bands and boxes into chunks; and the
kernels lower to CUDA."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from opforge.core.tolerances import for_dtype
from opforge.extract.subgraph import NodeSubgraph
from opforge.verify.inputs import make_inputs

pytest.importorskip("tvm")

SHAPES = [(2, 3, 16, 20), (9, 4), (9,)]


def _model(scale: float, mode: str, ctm: str, sampling_ratio: int = 2, dtype: int = TensorProto.FLOAT, shapes=SHAPES):
    node = helper.make_node(
        "RoiAlign",
        ["x", "rois", "idx"],
        ["y"],
        name="roi",
        spatial_scale=scale,
        mode=mode,
        coordinate_transformation_mode=ctm,
        output_height=5,
        output_width=6,
        sampling_ratio=sampling_ratio,
    )
    g = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", dtype, list(shapes[0])),
            helper.make_tensor_value_info("rois", dtype, list(shapes[1])),
            helper.make_tensor_value_info("idx", TensorProto.INT64, list(shapes[2])),
        ],
        [helper.make_tensor_value_info("y", dtype, [shapes[1][0], shapes[0][1], 5, 6])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])


def _row_bands(rois, scale: float, half_pixel: bool, height: int, band_rows: int, bins: int = 5, ratio: int = 2):
    """Per output row of each box, the first and last band holding the low row of one of its sampling lines (ONNX's
    geometry, computed here independently of the kernel), or None when none of its lines is on the map (ratio 0:
    ONNX's adaptive grid, ceil(bin height) lines per bin)."""
    off = 0.5 if half_pixel else 0.0
    spans = []
    for _x1, y1, _x2, y2 in rois.astype(np.float64) * scale - off:
        size = (y2 - y1) if half_pixel else max(y2 - y1, 1.0)
        step = size / bins
        grid = ratio if ratio > 0 else int(np.ceil(step))
        for p in range(bins):
            points = [y1 + p * step + (i + 0.5) * step / grid for i in range(grid)]
            lows = [int(min(max(y, 0.0), height - 1)) for y in points if -1.0 <= y <= height]
            spans.append((min(lows) // band_rows, max(lows) // band_rows) if lows else None)
    return spans


def _sub(m: onnx.ModelProto) -> NodeSubgraph:
    return NodeSubgraph("roi", "RoiAlign", m, ["x", "rois", "idx"], {}, ["y"])


@pytest.mark.parametrize("sampling_ratio", [2, 0])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_matches_onnx_on_cpu(mode, ctm, sampling_ratio):
    from opforge.lower.cpu_run import run_on_cpu

    for scale in (1.0, 0.5, 0.25, 0.125, 0.0625):
        m = _model(scale, mode, ctm, sampling_ratio)
        ins = make_inputs(m, SHAPES, np.random.default_rng(int(scale * 1000) + sampling_ratio))
        ref = ReferenceEvaluator(m).run(None, dict(zip(["x", "rois", "idx"], ins)))[0]
        out = run_on_cpu(_sub(m), ins)[0]
        tol = for_dtype("float32")
        np.testing.assert_allclose(out, ref, atol=tol.atol, rtol=tol.rtol, err_msg=f"{mode} {ctm} scale {scale}")


@pytest.mark.parametrize("sampling_ratio", [2, 0])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_plane_kernel_in_bands_matches_onnx_on_cpu(mode, sampling_ratio, monkeypatch):
    """A shared-memory budget so small that each plane runs in 4 bands of 4 rows: partial sums (and maxima) carried
    between bands in the output, outputs pooled in one band or several or (a box above the map) none, points outside
    the map counted, boxes of both images; fixed and adaptive (ratio 0) sampling grids."""
    from opforge.lower.cpu_run import run_on_cpu
    from opforge.lower.kernels import roi_align_plane

    shapes = [(2, 3, 16, 20), (13, 4), (13,)]
    budget = 6 * (20 + 1) * 4
    layout = roi_align_plane.plan_layout(16, 20, 4, budget, True)
    assert (layout.bands, layout.band_rows) == (4, 4)
    monkeypatch.setattr(roi_align_plane, "shared_budget", lambda: budget)
    assert roi_align_plane.layout_for(shapes[0], "float32", "float32", sampling_ratio) == layout  # the lowering's
    for scale, ctm in ((1.0, "half_pixel"), (0.25, "output_half_pixel")):
        m = _model(scale, mode, ctm, sampling_ratio, shapes=shapes)
        ins = make_inputs(m, shapes, np.random.default_rng(11))
        # The case covers what it is for: boxes of both images, reaching every band and past the map's edges.
        rows = np.concatenate([ins[1][:, 1], ins[1][:, 3]]) * scale
        assert set(ins[2].tolist()) == {0, 1} and rows.min() < 4 and rows.max() > 16
        assert ins[1][:, 0].min() * scale < 0 or ins[1][:, 2].max() * scale > 20
        # An output is pooled only in the bands its lines' low rows are in: some span two bands, some one, and one
        # box lies wholly above the map (its outputs in no band: band 0 writes them).
        ins[1][0, [1, 3]] = [-30.0 / scale, -10.0 / scale]
        spans = _row_bands(ins[1], scale, ctm == "half_pixel", 16, 4, ratio=sampling_ratio)
        assert None in spans and any(s and s[0] < s[1] for s in spans) and any(s and s[0] == s[1] > 0 for s in spans)
        ref = ReferenceEvaluator(m).run(None, dict(zip(["x", "rois", "idx"], ins)))[0]
        out = run_on_cpu(_sub(m), ins)[0]
        tol = for_dtype("float32")
        np.testing.assert_allclose(out, ref, atol=tol.atol, rtol=tol.rtol, err_msg=f"{mode} {ctm} scale {scale}")


@pytest.mark.slow  # LLVM takes about a minute to compile the symbolic kernel for the CPU
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_plane_kernel_on_maps_of_symbolic_size_matches_onnx_on_cpu(mode, monkeypatch):
    """One lowering for maps whose height, width and channels are symbolic (a detector exported for any image
    size), run at three sizes; the bands are decided when it runs: with a budget of 5 padded rows of the widest
    map, the 16x20 map runs in 4 bands, the 23x24 one in 6, the 4x7 one in a single band."""
    from opforge.lower.cpu_run import compile_on_cpu
    from opforge.lower.kernels import roi_align_plane

    monkeypatch.setattr(roi_align_plane, "shared_budget", lambda: 5 * (24 + 1) * 4)
    assert roi_align_plane.layout_for(("n", "c", "h", "w"), "float32", "float32", 2).budget == 5 * (24 + 1) * 4
    m = _model(0.5, mode, "half_pixel", shapes=[("n", "c", "h", "w"), ("r", 4), ("r",)])
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "r"
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "c"
    vm = compile_on_cpu(_sub(m))
    for k, shapes in enumerate(
        [[(2, 3, 16, 20), (9, 4), (9,)], [(1, 2, 23, 24), (5, 4), (5,)], [(1, 1, 4, 7), (3, 4), (3,)]]
    ):
        ins = make_inputs(m, shapes, np.random.default_rng(20 + k))
        ref = ReferenceEvaluator(m).run(None, dict(zip(["x", "rois", "idx"], ins)))[0]
        import tvm

        out = vm["main"](*[tvm.runtime.tensor(x) for x in ins]).numpy()
        tol = for_dtype("float32")
        np.testing.assert_allclose(out, ref, atol=tol.atol, rtol=tol.rtol, err_msg=f"{mode} {shapes[0]}")


def test_plane_kernel_on_half_maps_matches_onnx_on_cpu():
    """float16 maps and boxes: values widened to float32 to pool, coordinates in float32."""
    from opforge.lower.cpu_run import run_on_cpu

    for mode in ("avg", "max"):
        m = _model(0.5, mode, "half_pixel", dtype=TensorProto.FLOAT16)
        ins = make_inputs(m, SHAPES, np.random.default_rng(12))
        ref = ReferenceEvaluator(m).run(None, dict(zip(["x", "rois", "idx"], ins)))[0]
        out = run_on_cpu(_sub(m), ins)[0]
        tol = for_dtype("float16")
        np.testing.assert_allclose(out.astype(np.float32), ref.astype(np.float32), atol=tol.atol, rtol=tol.rtol)


@pytest.mark.parametrize("itemsize", [2, 4])
def test_plane_layouts_fit_their_budget(itemsize):
    """Over map sizes from FPN's smallest level to planes 8x too large for shared memory: every layout fits the
    budget, bands cover the map with equal heights, and half maps are never banded (their partial sums would round
    to half)."""
    from opforge.lower.kernels.roi_align_plane import plan_layout

    budget = 227 * 1024
    for h in (7, 25, 50, 100, 200, 334, 800):
        for w in (9, 34, 68, 136, 272, 1000):
            layout = plan_layout(h, w, itemsize, budget, itemsize == 4)
            fits = (h + 1) * (w + 1) * itemsize <= budget
            if layout is None:
                assert itemsize == 2 and not fits
                continue
            assert layout.shared_bytes == (layout.band_rows + 1) * (w + 1) * itemsize <= budget
            assert layout.bands * layout.band_rows >= h > (layout.bands - 1) * layout.band_rows
            assert (layout.bands == 1) == fits
    # FPN's largest level for an 800x1088 image, fp32: one band, on the H100.
    assert plan_layout(200, 272, 4, budget, True).bands == 1


@pytest.mark.slow
def test_plane_kernel_of_symbolic_size_sizes_its_shared_memory_when_it_runs():
    """A map of symbolic size: the plane kernel's shared memory is an expression of the map's width and height
    (the plugin opts in to the device's limit at load time)."""
    from opforge.lower.tvm_lower import lower_subgraph

    shapes = [("n", "c", "h", "w"), ("r", 4), ("r",)]
    plan = lower_subgraph(_sub(_model(0.5, "avg", "half_pixel", shapes=shapes)))
    smem = [lc.shared_mem for lc in plan.launches if lc.shared_mem != "0"]
    assert len(smem) == 1 and "w" in smem[0] and "h" in smem[0]


def test_roi_align_max_differs_from_tvms_interpolated_max():
    """The case the kernel exists for: TVM's own legalization (max of interpolated values) is wrong here."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from opforge.lower.onnx_rewrites import prepare_for_tvm

    m = _model(0.25, "max", "half_pixel")
    ins = make_inputs(m, SHAPES, np.random.default_rng(5))
    ref = ReferenceEvaluator(m).run(None, dict(zip(["x", "rois", "idx"], ins)))[0]
    ex = tvm.compile(from_onnx(prepare_for_tvm(m), keep_params_in_input=False), target="llvm")
    tvm_default = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(x) for x in ins]).numpy()
    assert np.abs(tvm_default - ref).max() > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("sampling_ratio", [2, 0])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_kernel_lowers_to_cuda(mode, sampling_ratio):
    """Both sampling modes take the plane kernel (an adaptive grid's coordinates computed while pooling)."""
    from opforge.lower.tvm_lower import lower_subgraph

    plan = lower_subgraph(_sub(_model(0.25, mode, "half_pixel", sampling_ratio=sampling_ratio)))
    assert "roi_align" in plan.cuda_source and plan.launches
    # Sampling coordinates round each operation as ONNX's reference does: nvcc's default fma contraction moved
    # outputs of a 200x272 map (rois in image coordinates, scale 0.25) by 8.9e-05 on the H100.
    kernel = plan.cuda_source.split("roi_align_kernel(")[-1]
    assert "__fadd_rn(__fadd_rn(" in kernel and "__fmul_rn(" in kernel
    # The plane in shared memory (more than CUDA's default 48 KB would be opted in to at load time), its padded
    # 17 x 21 values here.
    assert "extern __shared__" in plan.cuda_source and [int(lc.shared_mem) for lc in plan.launches][-1] == 17 * 21 * 4


def test_adaptive_grid_without_a_plane_kernel_fails_naming_the_fix():
    """An adaptive grid on a map the plane kernel does not take (float64; half maps are pooled in float32) has no
    GPU kernel: the thread-per-output kernel's grid extent depends on the boxes. The lowering says so in one line
    instead of TVM's message about a shape expression."""
    from opforge.core.errors import LoweringError
    from opforge.lower.tvm_lower import lower_subgraph

    m = _model(0.5, "avg", "half_pixel", sampling_ratio=0, dtype=TensorProto.DOUBLE)
    with pytest.raises(LoweringError, match=r"adaptive sampling grid .* takes float32 and float16 maps, not float64"):
        lower_subgraph(_sub(m))
