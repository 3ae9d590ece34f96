"""RoiAlign through opforge's kernel (opforge.lower.kernels.roi_align), against ONNX's reference: both modes, both
coordinate transformation modes, spatial scales 1 .. 1/16, run by TVM on the CPU (llvm) with the registry's
rewrites and kernels applied exactly as for CUDA; and the kernel lowers to CUDA."""

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


def _model(scale: float, mode: str, ctm: str, sampling_ratio: int = 2, dtype: int = TensorProto.FLOAT):
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
            helper.make_tensor_value_info("x", dtype, list(SHAPES[0])),
            helper.make_tensor_value_info("rois", dtype, list(SHAPES[1])),
            helper.make_tensor_value_info("idx", TensorProto.INT64, list(SHAPES[2])),
        ],
        [helper.make_tensor_value_info("y", dtype, [9, 3, 5, 6])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 16)])


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
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_kernel_lowers_to_cuda(mode):
    from opforge.lower.tvm_lower import lower_subgraph

    plan = lower_subgraph(_sub(_model(0.25, mode, "half_pixel", sampling_ratio=2)))
    assert "roi_align" in plan.cuda_source and plan.launches
    # Sampling coordinates round each operation as ONNX's reference does: nvcc's default fma contraction moved
    # outputs of a 200x272 map (rois in image coordinates, scale 0.25) by 8.9e-05 on the H100.
    kernel = plan.cuda_source.split("roi_align_kernel(")[-1]
    assert "__fadd_rn(__fadd_rn(" in kernel and "__fmul_rn(" in kernel
