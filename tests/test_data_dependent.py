"""Data-dependent output shapes (NonZero, Unique, Compress with a run-time condition) through size tensors.

On the CPU: the plan format (version 2 with `sizes`, version 1 still loading), trimming outputs to the size tensors'
values, opforge's kernels run by TVM on llvm against ONNX's reference on seeded random inputs (many zeros for
NonZero, repeated values and rows for Unique), the lowering to CUDA (one size tensor output per distinct extent),
and the plugins built with nvcc against the TensorRT headers and driven through TensorRT's call sequence up to the
first CUDA call (declareSizeTensor in getOutputShapes). The GPU run of the same plugins through the harness is
`test_plugins_run_on_the_gpu`, skipped without a GPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from opforge.core.kernel_plan import KernelPlan, SizeTensor, TensorSpec
from opforge.extract.subgraph import NodeSubgraph

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _model(op: str, inputs: list[tuple[str, int, list]], outputs: list[tuple[str, int]], **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, [n for n, _, _ in inputs], [n for n, _ in outputs], name="n", **attrs)
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _sub(m: onnx.ModelProto) -> NodeSubgraph:
    ins = [vi.name for vi in m.graph.input]
    return NodeSubgraph("n", m.graph.node[0].op_type, m, ins, {}, [o for o in m.graph.node[0].output])


def _check_on_cpu(m: onnx.ModelProto, inputs: list[np.ndarray], reference: onnx.ModelProto | None = None) -> None:
    """opforge's lowering run by TVM on llvm against ONNX's reference (of `reference` on the flattened inputs when
    given: onnx.reference's Unique without an axis does not flatten a multi-dimensional input as the spec says)."""
    from opforge.lower.cpu_run import run_on_cpu

    names = [vi.name for vi in m.graph.input]
    if reference is None:
        want = ReferenceEvaluator(m).run(None, dict(zip(names, inputs)))
    else:
        want = ReferenceEvaluator(reference).run(None, {n: a.reshape(-1) for n, a in zip(names, inputs)})
    node = m.graph.node[0]
    axis = next((a.i for a in node.attribute if a.name == "axis"), None)
    unsorted = any(a.name == "sorted" and a.i == 0 for a in node.attribute)
    if node.op_type == "Unique" and unsorted and axis is not None and len(want) > 1:
        # onnx.reference takes the first-occurrence slices along axis 0 whatever the axis: Y from its indices.
        want = [np.take(inputs[0], want[1], axis=axis), *want[1:]]
    got = run_on_cpu(_sub(m), inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_array_equal(g, w)


# --- the plan format ------------------------------------------------------------------------------------------


def _plan(**kw) -> KernelPlan:
    return KernelPlan(
        key="k",
        op_type="NonZero",
        dims=[],
        inputs=[TensorSpec("x", "float32", ["3", "4"])],
        outputs=[TensorSpec("y", "int64", ["2", "opf_size0"]), TensorSpec("opf_size0", "int32", [])],
        constants=[],
        launches=[],
        workspace="0",
        cuda_source="",
        sizes=[SizeTensor("opf_size0", 1, "12", "12")],
        **kw,
    )


def test_plan_with_sizes_round_trips_and_version_1_still_loads():
    plan = _plan()
    assert KernelPlan.from_json(plan.to_json()) == plan and plan.version == 2 and plan.nb_onnx_outputs == 1
    old = json.loads(plan.to_json())
    old["version"] = 1
    del old["sizes"]
    v1 = KernelPlan.from_json(json.dumps(old))
    assert v1.sizes == [] and v1.version == 1
    old["version"] = 99
    with pytest.raises(ValueError, match="regenerate the plan"):
        KernelPlan.from_json(json.dumps(old))


def test_outputs_are_allocated_at_the_upper_bound_and_trimmed_to_the_size_tensor():
    plan = _plan()
    env = plan.bind_dims([(3, 4)])
    assert plan.output_shapes(env) == [(2, 12), ()]
    alloc = np.full((2, 12), -1, np.int64)
    alloc.reshape(-1)[:6] = [0, 1, 2, 3, 2, 1]  # [2, 3] written densely
    (y,) = plan.trim_outputs(env, [alloc, np.array(3, np.int32)])
    np.testing.assert_array_equal(y, [[0, 1, 2], [3, 2, 1]])
    with pytest.raises(ValueError, match="outside"):
        plan.trim_outputs(env, [alloc, np.array(13, np.int32)])


# --- the kernels on the CPU against ONNX's reference ---------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("shape", "elem"), [([7], F), ([5, 6], F), ([2, 3, 4], TensorProto.INT32), ([4, 5], B)])
def test_nonzero_matches_onnx_on_cpu(seed, shape, elem):
    rng = np.random.default_rng(seed)
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    x = rng.integers(-3, 4, shape) * (rng.random(shape) < 0.4)  # mostly zeros
    _check_on_cpu(_model("NonZero", [("x", elem, shape)], [("y", I64)]), [x.astype(dtype)])


def test_nonzero_of_all_zeros_and_no_zeros_on_cpu():
    m = _model("NonZero", [("x", F, [3, 4])], [("y", I64)])
    _check_on_cpu(m, [np.zeros((3, 4), np.float32)])
    _check_on_cpu(m, [np.ones((3, 4), np.float32)])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("sorted_", [0, 1])
@pytest.mark.parametrize(("shape", "axis"), [([9], None), ([3, 4], None), ([6, 3], 0), ([2, 5, 2], 1), ([4, 5], -1)])
def test_unique_matches_onnx_on_cpu(seed, sorted_, shape, axis):
    rng = np.random.default_rng(seed)
    attrs = {"sorted": sorted_} if axis is None else {"sorted": sorted_, "axis": axis}
    outs = [("Y", F), ("indices", I64), ("inverse_indices", I64), ("counts", I64)]
    m = _model("Unique", [("X", F, shape)], outs, **attrs)
    x = rng.integers(0, 3, shape).astype(np.float32)  # few values: repeats, and repeated rows along an axis
    if axis is not None:  # make some slices along the axis equal
        a = axis % len(shape)
        x = np.take(x, rng.integers(0, max(2, shape[a] // 2), shape[a]), axis=a)
    flat = _model("Unique", [("X", F, [int(np.prod(shape))])], outs, **attrs) if axis is None else None
    _check_on_cpu(m, [x], flat)


@pytest.mark.parametrize("sorted_", [0, 1])
def test_unique_with_fewer_outputs_and_int64_on_cpu(sorted_):
    m = _model("Unique", [("X", I64, [10])], [("Y", I64), ("indices", I64)], sorted=sorted_)
    _check_on_cpu(m, [np.array([5, -1, 5, 7, -1, 0, 0, 7, 5, 2], np.int64)])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("shape", "cond_len", "axis"), [([3, 4], 12, None), ([5, 3], 5, 0), ([3, 6], 4, 1), ([2, 3, 4], 3, -2)]
)
def test_compress_with_runtime_condition_matches_onnx_on_cpu(seed, shape, cond_len, axis):
    rng = np.random.default_rng(seed)
    attrs = {} if axis is None else {"axis": axis}
    m = _model("Compress", [("x", F, shape), ("c", B, [cond_len])], [("y", F)], **attrs)
    x = rng.standard_normal(shape).astype(np.float32)
    _check_on_cpu(m, [x, rng.random(cond_len) < 0.5])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("center", [0, 1])
@pytest.mark.parametrize("with_score", [True, False])
def test_nms_matches_onnx_on_cpu(seed, center, with_score):
    rng = np.random.default_rng(seed)
    n_batch, n_class, n_box, max_out = 2, 3, 24, 5
    ins = [("boxes", F, [n_batch, n_box, 4]), ("scores", F, [n_batch, n_class, n_box]), ("iou", F, [1])]
    ins += [("score", F, [1])] if with_score else []
    node_inputs = ["boxes", "scores", "max_out", "iou"] + (["score"] if with_score else [])
    node = helper.make_node("NonMaxSuppression", node_inputs, ["y"], name="n", center_point_box=center)
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in ins],
        [helper.make_tensor_value_info("y", I64, None)],
        [onnx.numpy_helper.from_array(np.array([max_out], np.int64), "max_out")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    lo = rng.uniform(0, 6, (n_batch, n_box, 2))
    size = rng.uniform(0.5, 4, (n_batch, n_box, 2))
    boxes = np.concatenate([lo, lo + size], -1) if not center else np.concatenate([lo, size], -1)
    if seed == 2:
        boxes[..., [0, 2]] = boxes[..., [2, 0]]  # flipped corners
    scores = rng.random((n_batch, n_class, n_box)).round(1)  # ties among scores
    inputs = [boxes.astype(np.float32), scores.astype(np.float32), np.array([0.3], np.float32)]
    inputs += [np.array([0.25], np.float32)] if with_score else []
    _check_on_cpu(m, inputs)


# --- lowering to CUDA -------------------------------------------------------------------------------------------


def test_unique_lowers_with_one_size_tensor_for_three_outputs():
    from opforge.lower.tvm_lower import lower_subgraph

    outs = [("Y", F), ("indices", I64), ("inverse_indices", I64), ("counts", I64)]
    plan = lower_subgraph(_sub(_model("Unique", [("X", F, [4, 3])], outs, axis=1)))
    (size,) = plan.sizes
    assert size.output == 4 and plan.nb_onnx_outputs == 4 and expr_value(size.upper) == 3
    assert [o.shape for o in plan.outputs] == [["4", size.name], [size.name], ["3"], [size.name], []]
    assert plan.outputs[4].dtype == "int32"
    assert any(a.kind == "output" and a.index == 4 for launch in plan.launches for a in launch.args)


def test_symbolic_input_gives_an_upper_bound_over_its_dims():
    from opforge.core import expr
    from opforge.lower.tvm_lower import lower_subgraph

    plan = lower_subgraph(_sub(_model("Compress", [("x", F, ["N", 8]), ("c", B, ["C"])], [("y", F)], axis=0)))
    (size,) = plan.sizes
    assert expr.evaluate(size.upper, {"N": 5, "C": 3}) == 3 and expr.evaluate(size.upper, {"N": 2, "C": 3}) == 2
    assert plan.outputs[0].shape == [size.name, "8"]


def expr_value(text: str) -> int:
    from opforge.core import expr

    return expr.evaluate(text, {})


# --- plugins: nvcc build against the TensorRT headers, TensorRT's call sequence ---------------------------------

CASES = {
    "test_nonzero_example",
    "test_unique_sorted_with_axis_3d",
    "test_unique_not_sorted_without_axis",
    "test_compress_1",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if shutil.which("nvcc") is None and not __import__("pathlib").Path("/usr/local/cuda/bin/nvcc").is_file():
        pytest.skip("no nvcc")
    from opforge.testing.conformance import build, load_cases

    bundle = tmp_path_factory.mktemp("dd-bundle")
    rows = build(bundle, load_cases(CASES))
    return bundle, rows


@pytest.mark.slow
def test_plugins_build_and_declare_size_tensors_in_the_tensorrt_sequence(built):
    from opforge.build.package import HARNESS_PATH
    from opforge.testing.conformance import load_built_case
    from opforge.verify.harness import Harness

    bundle, rows = built
    assert {r["case"] for r in rows if r.get("built")} == CASES, rows
    harness, declared = Harness(bundle / HARNESS_PATH), {}
    for row in rows:
        case = load_built_case(bundle, row, harness, declared)
        assert case.plan.sizes
        case.call(0xFF, False)  # getOutputShapes with declareSizeTensor, up to the first CUDA call


def _gpu() -> bool:
    try:
        from cuda.bindings import runtime

        err, n = runtime.cudaGetDeviceCount()
        return int(err) == 0 and n > 0
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _gpu(), reason="needs a GPU")
def test_plugins_run_on_the_gpu(built):
    from opforge.testing.conformance import run

    bundle, _ = built
    results = {r["case"]: r for r in run(bundle)}
    assert all(results[c]["class"] == "pass" for c in CASES), results


def test_a_data_dependent_node_is_not_fused_with_its_consumers():
    from opforge.extract.groups import fusion_groups

    nodes = [
        helper.make_node("Compress", ["x", "c"], ["y"], name="cmp"),
        helper.make_node("Unique", ["y"], ["u"], name="uq"),
        helper.make_node("Compress", ["x", "k"], ["z"], name="const_cmp"),  # constant condition: a Gather
        helper.make_node("Abs", ["z"], ["w"], name="abs"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F, [5]), helper.make_tensor_value_info("c", B, [5])],
        [helper.make_tensor_value_info("u", F, None), helper.make_tensor_value_info("w", F, None)],
        [onnx.numpy_helper.from_array(np.array([1, 0, 1, 1, 0], bool), "k")],
    )
    m = helper.make_model(g)
    groups = [[n.name for n in grp] for grp in fusion_groups(m, list(m.graph.node))]
    assert groups == [["cmp"], ["uq"], ["const_cmp", "abs"]]


def test_input_domains_draw_zeros_repeats_and_valid_boxes():
    from opforge.verify.inputs import make_inputs

    rng = np.random.default_rng(3)
    (x,) = make_inputs(_model("NonZero", [("x", F, [40, 50])], [("y", I64)]), [(40, 50)], rng)
    assert 0.2 < np.mean(x == 0) < 0.8
    (u,) = make_inputs(_model("Unique", [("X", F, [200])], [("Y", F)]), [(200,)], rng)
    assert len(np.unique(u)) <= 4
    nms = _model(
        "NonMaxSuppression",
        [("boxes", F, [1, 30, 4]), ("scores", F, [1, 2, 30]), ("m", I64, [1]), ("iou", F, [1]), ("score", F, [1])],
        [("y", I64)],
    )
    boxes, scores, _, iou, score = make_inputs(nms, [(1, 30, 4), (1, 2, 30), (1,), (1,), (1,)], rng)
    assert (boxes[..., 2:] > boxes[..., :2]).all() and ((scores >= 0) & (scores < 1)).all()
    assert iou[0] == np.float32(0.5) and score[0] == np.float32(0.2)
