"""GroupNormalization and ReduceLogSumExp as one kernel each (opforge's converters, lower/kernels/group_norm.py and
logsumexp.py), reductions taking their elementwise tails (lower/fusion.py mark_reduction_tails), reshape kernels as
views: values against ONNX's reference on TVM's CPU backend, launches counted in the CUDA plans."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from opforge.core.tolerances import for_dtype
from opforge.extract.subgraph import NodeSubgraph

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _model(node: onnx.NodeProto, inputs, out_shape, opset: int, elem=F32, inits=()) -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    g = helper.make_graph(
        [node],
        "g",
        [vi(n, e, s) for n, e, s in inputs],
        [vi(node.output[0], elem, out_shape)],
        initializer=list(inits),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _sub(m: onnx.ModelProto) -> NodeSubgraph:
    node = m.graph.node[0]
    names = [i.name for i in m.graph.input]
    return NodeSubgraph(node.name or "n", node.op_type, m, names, {}, list(node.output))


def _check(m: onnx.ModelProto, feeds: dict, dtype: str) -> None:
    from opforge.lower.cpu_run import run_on_cpu

    ref = ReferenceEvaluator(m).run(None, feeds)[0]
    out = run_on_cpu(_sub(m), list(feeds.values()))[0]
    tol = for_dtype(dtype)
    assert out.shape == ref.shape
    np.testing.assert_allclose(
        out.astype(np.float64),
        ref.astype(np.float64),
        atol=tol.atol * max(1.0, np.abs(ref[np.isfinite(ref)]).max(initial=0)),
        rtol=tol.rtol,
    )


def _lse(shape, axes, keepdims, opset, elem=F32):
    rank = len(shape)
    kept = [1 if k in [a % rank for a in axes] else d for k, d in enumerate(shape)]
    out = kept if keepdims else [d for k, d in enumerate(shape) if k not in [a % rank for a in axes]]
    if opset >= 18:
        node = helper.make_node("ReduceLogSumExp", ["x", "axes"], ["y"], keepdims=keepdims)
        inits = [helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)]
    else:
        node = helper.make_node("ReduceLogSumExp", ["x"], ["y"], keepdims=keepdims, axes=axes)
        inits = []
    return _model(node, [("x", elem, list(shape))], out, opset, elem, inits)


@pytest.mark.parametrize(
    "shape,axes,keepdims,opset",
    [((37, 1000), [1], 0, 18), ((5, 7, 33), [-1, -2], 1, 18), ((6, 129), [-1], 1, 13), ((3, 4, 5), [0, 1, 2], 0, 18)],
)
def test_logsumexp_matches_onnx_with_infinite_rows(shape, axes, keepdims, opset):
    from opforge.lower.cpu_run import run_on_cpu

    rng = np.random.default_rng(sum(shape) + opset)
    x = (rng.standard_normal(shape) * 8).astype(np.float32)
    m = _lse(shape, axes, keepdims, opset)
    _check(m, {"x": x}, "float32")
    if len(shape) == 2:
        # log(sum(exp(x))) of a row of -inf is log 0 = -inf, of a row holding +inf, +inf (ONNX's reference, which
        # subtracts the row's max first, gives NaN for both).
        x[0, :], x[1, 3] = -np.inf, np.inf
        out = run_on_cpu(_sub(m), [x])[0].reshape(shape[0])
        assert out[0] == -np.inf and out[1] == np.inf and np.isfinite(out[2:]).all()


def test_logsumexp_half_on_float32():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((9, 300)) * 4).astype(np.float16)
    _check(_lse((9, 300), [1], 0, 18, F16), {"x": x}, "float16")


def _group_norm(shape, groups, opset, per):
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=groups, epsilon=1e-5)
    return _model(node, [("x", F32, list(shape)), ("s", F32, [per]), ("b", F32, [per])], list(shape), opset)


@pytest.mark.parametrize("shape,groups,opset", [((3, 12, 7, 9), 4, 21), ((2, 10, 33), 5, 21), ((2, 6, 5, 5), 3, 18)])
def test_group_norm_matches_onnx(shape, groups, opset):
    rng = np.random.default_rng(shape[1] * groups + opset)
    per = shape[1] if opset >= 21 else groups
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(np.float32)
    feeds = {"x": x, "s": rng.uniform(0.5, 2, per).astype(np.float32), "b": rng.standard_normal(per).astype(np.float32)}
    _check(_group_norm(shape, groups, opset, per), feeds, "float32")


def test_group_norm_far_from_zero():
    """A mean 1000 times the spread: the variance comes from centred values. E[x^2] - E[x]^2 in float32, which
    ONNX's function body (and so its reference) computes, is 7-14% off here; the check is against float64."""
    from opforge.lower.cpu_run import run_on_cpu

    rng = np.random.default_rng(11)
    x = (rng.standard_normal((2, 8, 16, 16)) + 1000.0).astype(np.float32)
    feeds = {"x": x, "s": np.ones(8, np.float32), "b": np.zeros(8, np.float32)}
    out = run_on_cpu(_sub(_group_norm((2, 8, 16, 16), 2, 21, 8)), list(feeds.values()))[0]
    rows = x.astype(np.float64).reshape(2, 2, -1)
    want = ((rows - rows.mean(-1, keepdims=True)) / np.sqrt(rows.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    # float32 rounding of x - mean (x near 1000: steps of 6e-5) bounds the agreement
    np.testing.assert_allclose(out, want, atol=1e-3)


@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (2, 64, 33)])
def test_instance_norm_matches_onnx(shape):
    """InstanceNormalization through the same kernel, one channel per group."""
    rng = np.random.default_rng(shape[1])
    node = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-5)
    c = shape[1]
    m = _model(node, [("x", F32, list(shape)), ("s", F32, [c]), ("b", F32, [c])], list(shape), 6)
    x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)
    feeds = {"x": x, "s": rng.uniform(0.5, 2, c).astype(np.float32), "b": rng.standard_normal(c).astype(np.float32)}
    _check(m, feeds, "float32")


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: _group_norm((16, 320, 64, 64), 32, 21, 320), id="GroupNormalization"),
        pytest.param(
            lambda: _model(
                helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"]),
                [("x", F32, [16, 64, 112, 112]), ("s", F32, [64]), ("b", F32, [64])],
                [16, 64, 112, 112],
                6,
            ),
            id="InstanceNormalization",
        ),
        pytest.param(lambda: _lse((37, 1000), [1], 0, 18), id="ReduceLogSumExp"),
        pytest.param(lambda: _lse((64, 4096), [1], 1, 18, F16), id="ReduceLogSumExp-half"),
        pytest.param(
            lambda: _model(
                helper.make_node("ReduceL2", ["x", "axes"], ["y"], keepdims=0),
                [("x", F32, [16, 197, 384])],
                [16, 197],
                18,
                inits=[helper.make_tensor("axes", TensorProto.INT64, [1], [2])],
            ),
            id="ReduceL2",
        ),
    ],
)
def test_one_launch_on_cuda(model):
    """Each lowers to one kernel: no reshape copy, no float32 copy of a half input, the tail in the reduction."""
    from opforge.lower.tvm_lower import lower_subgraph

    plan = lower_subgraph(_sub(model()))
    assert len(plan.launches) == 1, [launch.kernel for launch in plan.launches]


def test_reduction_to_a_scalar_keeps_its_split_over_blocks():
    """DynamicQuantizeLinear's max and min over the whole tensor stay split over several blocks: with their
    elementwise tail fused in, DLight left one thread looping over 4M elements (mark_reduction_tails.MIN_TAIL_ROWS)."""
    from opforge.lower.tvm_lower import lower_subgraph

    vi = helper.make_tensor_value_info
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    g = helper.make_graph(
        [node],
        "g",
        [vi("x", F32, [1024, 4096])],
        [vi("y", TensorProto.UINT8, [1024, 4096]), vi("s", F32, []), vi("z", TensorProto.UINT8, [])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    plan = lower_subgraph(NodeSubgraph("n", "DynamicQuantizeLinear", m, ["x"], {}, ["y", "s", "z"]))
    reductions = [launch for launch in plan.launches if launch.kernel.endswith(("max_kernel", "min_kernel"))]
    assert reductions and all(int(launch.grid[0]) > 1 for launch in reductions), [
        (launch.kernel, launch.grid) for launch in plan.launches
    ]


def test_widening_casts_inputs_of_unknown_type_that_share_the_half_type():
    """A Conv whose input comes from an untyped tensor (a Concat inside an expanded function body) and whose weight
    is float16: both are cast up, by the schema's shared type constraint (the weight alone was, and TVM refused the
    mixed types: CausalConvWithState fp16 lower-failed)."""
    from opforge.lower.onnx_rewrites import widen_accumulations

    vi = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Concat", ["a", "b"], ["padded"], axis=2),
        helper.make_node("Conv", ["padded", "w"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [vi("a", F16, [1, 4, 2]), vi("b", F16, [1, 4, 6]), vi("w", F16, [4, 4, 3])],
        [vi("y", F16, [1, 4, 6])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    conv = next(n for n in widen_accumulations(m).graph.node if n.op_type == "Conv")
    casts = {n.output[0]: n.input[0] for n in widen_accumulations(m).graph.node if n.op_type == "Cast"}
    assert casts.get(conv.input[0]) == "padded" and casts.get(conv.input[1]) == "w"


def _group_norm_silu(shape, groups: int, elem) -> onnx.ModelProto:
    c = shape[1]
    vi = helper.make_tensor_value_info
    nodes = [
        helper.make_node("GroupNormalization", ["x", "s", "b"], ["gn"], num_groups=groups),
        helper.make_node("Sigmoid", ["gn"], ["sig"]),
        helper.make_node("Mul", ["gn", "sig"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "g", [vi("x", elem, list(shape)), vi("s", elem, [c]), vi("b", elem, [c])], [vi("y", elem, list(shape))]
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def _chain_sub(m: onnx.ModelProto) -> NodeSubgraph:
    names = [i.name for i in m.graph.input]
    return NodeSubgraph("gn", "GroupNormalization+Sigmoid+Mul", m, names, {}, ["y"])


@pytest.mark.parametrize("elem", [F32, F16])
def test_group_norm_silu_is_one_kernel_and_matches_onnx(elem):
    """GroupNorm's kernel runs on an (N, G, M) view reshaped back before SiLU; the reshape moves below SiLU
    (fusion.sink_reshapes), the half input's widening cast above the view (it fuses into the loads), and the final
    reshape stays a view (fusion.isolate_result_reshapes): one launch, values as ONNX's reference on the CPU."""
    from opforge.lower.cpu_run import run_on_cpu
    from opforge.lower.tvm_lower import lower_subgraph

    dtype = "float32" if elem == F32 else "float16"
    m = _group_norm_silu((4, 64, 8, 8), 8, elem)
    plan = lower_subgraph(_chain_sub(m))
    assert len(plan.launches) == 1, [launch.kernel for launch in plan.launches]
    rng = np.random.default_rng(5)
    feeds = {
        "x": (rng.standard_normal((4, 64, 8, 8)) * 3 + 1).astype(dtype),
        "s": rng.uniform(0.5, 1.5, 64).astype(dtype),
        "b": rng.uniform(-0.2, 0.2, 64).astype(dtype),
    }
    ref = ReferenceEvaluator(m).run(None, feeds)[0]
    out = run_on_cpu(_chain_sub(m), list(feeds.values()))[0]
    tol = for_dtype(dtype)
    np.testing.assert_allclose(out.astype(np.float64), ref.astype(np.float64), atol=tol.atol * 4, rtol=tol.rtol)


def test_reshape_stays_where_an_operand_has_the_reshaped_shape():
    """An elementwise op with an operand of the reshaped shape (not a reshape of the same kind) keeps its reshape
    before it: the op cannot run on the source's shape."""
    from tvm import relax

    from opforge.lower.fusion import sink_reshapes

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 6), "float32"))
    y = relax.Var("y", relax.TensorType((2, 12), "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            r = bb.emit(relax.op.reshape(x, (2, 12)))
            s = bb.emit(relax.op.sigmoid(r))
            out = bb.emit_output(relax.op.add(s, y))
        bb.emit_func_output(out)
    mod = relax.transform.DeadCodeElimination()(sink_reshapes(bb.get()))
    text = mod["main"].script()
    assert text.count("R.reshape(") == 1
    assert text.index("R.sigmoid(x)") < text.index("R.reshape(")  # sunk below the sigmoid
    assert "R.add(" in text and ", y)" in text  # the add stays on the reshaped shape
