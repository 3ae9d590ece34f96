"""The registry's expansions of onnxruntime's com.microsoft ops and of ConvInteger: each expansion (the ONNX ops
TVM gets) against the original op on onnxruntime's CPU kernels (ConvInteger: ONNX's reference too), on seeded random
inputs; a few through TVM (llvm, on the CPU); shapes inferred through contrib ops; subgraphs of contrib nodes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from opforge.extract import extract_nodes
from opforge.lower.onnx_rewrites import prepare_for_tvm

F, I8, U8, I32 = TensorProto.FLOAT, TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32
MS = "com.microsoft"


def _model(op, inputs, outputs, inits=(), domain=MS, opset=17, **attrs):
    node = helper.make_node(op, [n for n, *_ in inputs] + [t.name for t in inits], [n for n, *_ in outputs], **attrs)
    if domain:
        node.domain = domain
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=list(inits),
    )
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(g, opset_imports=imports, ir_version=9)


def _ort(m, feeds):
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _feeds(m, rng):
    out = {}
    for i in m.graph.input:
        tt = i.type.tensor_type
        shape = [d.dim_value for d in tt.shape.dim]
        if tt.elem_type == F:
            out[i.name] = rng.standard_normal(shape).astype(np.float32) * 2
        elif tt.elem_type == U8:
            out[i.name] = rng.integers(0, 256, shape).astype(np.uint8)
        else:
            out[i.name] = rng.integers(-128, 128, shape).astype(np.int8)
    return out


def _init(name, value):
    return numpy_helper.from_array(value, name)


def _cases():
    rng = np.random.default_rng(7)
    bias = _init("bias", rng.standard_normal(16).astype(np.float32))
    gamma = _init("gamma", rng.standard_normal(16).astype(np.float32))
    beta = _init("beta", rng.standard_normal(16).astype(np.float32))
    bias32 = _init("bias", rng.standard_normal(32).astype(np.float32))
    x = ("x", F, [2, 5, 16])
    y = ("y", F, [2, 5, 16])
    return {
        "Gelu": _model("Gelu", [x], [y]),
        "BiasGelu": _model("BiasGelu", [x], [y], [bias]),
        "FastGelu": _model("FastGelu", [x], [y], [bias]),
        "FastGelu-nobias": _model("FastGelu", [x], [y]),
        "QuickGelu": _model("QuickGelu", [x], [y], alpha=1.5),
        "BiasAdd": _model("BiasAdd", [x, ("b", F, [16]), ("skip", F, [2, 5, 16])], [y]),
        "BiasSplitGelu": _model("BiasSplitGelu", [("x", F, [2, 5, 32])], [y], [bias32]),
        "SkipLayerNormalization": _model(
            "SkipLayerNormalization",
            [x, ("skip", F, [2, 5, 16])],
            [y, ("mean", F, None), ("inv", F, None), ("sum", F, [2, 5, 16])],
            [gamma, beta, bias],
            epsilon=1e-5,
        ),
        "SkipLayerNormalization-plain": _model(
            "SkipLayerNormalization", [x, ("skip", F, [2, 5, 16])], [y], [gamma], epsilon=1e-5
        ),
        "SkipSimplifiedLayerNormalization": _model(
            "SkipSimplifiedLayerNormalization",
            [x, ("skip", F, [2, 5, 16])],
            [y, ("mean", F, None), ("inv", F, None), ("sum", F, [2, 5, 16])],
            [gamma],
            epsilon=1e-6,
        ),
        "FusedMatMul": _model(
            "FusedMatMul",
            [("a", F, [3, 7, 4]), ("b", F, [3, 5, 7])],
            [("y", F, [3, 4, 5])],
            transA=1,
            transB=1,
            alpha=0.5,
        ),
        "FusedMatMul-plain": _model("FusedMatMul", [("a", F, [3, 4, 7]), ("b", F, [7, 5])], [("y", F, [3, 4, 5])]),
        "DynamicQuantizeMatMul": _model(
            "DynamicQuantizeMatMul",
            [("a", F, [3, 4, 8])],
            [("y", F, [3, 4, 6])],
            [
                _init("B", rng.integers(-128, 128, (8, 6)).astype(np.int8)),
                _init("b_scale", np.array(0.02, np.float32)),
                _init("b_zero", np.array(3, np.int8)),
                _init("bias", rng.standard_normal(6).astype(np.float32)),
            ],
        ),
    }


def _erf_gelu(v):
    from math import erf

    return 0.5 * v * (1 + np.vectorize(erf)(v / np.sqrt(2)))


# onnxruntime implements these on CUDA only: their documented formula in numpy.
CUDA_ONLY = {
    "BiasAdd": lambda f, i: [f["x"] + f["b"] + f["skip"]],
    "BiasSplitGelu": lambda f, i: [
        (lambda v: v[..., :16] * _erf_gelu(v[..., 16:]))(f["x"].astype(np.float64) + i["bias"])
    ],
}


@pytest.mark.parametrize("case", sorted(_cases()))
@pytest.mark.parametrize("seed", [0, 1])
def test_contrib_expansion_matches_onnxruntime(case, seed):
    m = _cases()[case]
    feeds = _feeds(m, np.random.default_rng(seed))
    if case in CUDA_ONLY:
        inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        want = CUDA_ONLY[case](feeds, inits)
    else:
        want = _ort(m, feeds)
    expanded = prepare_for_tvm(m)
    assert all(n.domain in ("", "ai.onnx") for n in expanded.graph.node), f"{case} was not expanded"
    got = _ort(expanded, feeds)
    for k, (g, w) in enumerate(zip(got, want)):
        if case.startswith("SkipSimplified") and k == 1:
            continue  # onnxruntime leaves the simplified op's mean output unwritten
        assert g.shape == w.shape, (case, k)
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5, err_msg=f"{case} output {k}")


def test_fused_matmul_batch_transpose_is_left_alone():
    m = _model("FusedMatMul", [("a", F, [3, 4, 7]), ("b", F, [7, 5])], [("y", F, [3, 4, 5])], transBatchA=1)
    assert prepare_for_tvm(m).graph.node[0].op_type == "FusedMatMul"


def _conv_integer(x_type, w_zero_per_channel: bool, rng, group=1, pads=(1, 1, 1, 1)):
    cin, cout = 4, 6
    w = rng.integers(0, 256, (cout, cin // group, 3, 3)).astype(np.uint8)
    wz = rng.integers(0, 256, (cout,) if w_zero_per_channel else ()).astype(np.uint8)
    inits = [_init("w", w), _init("xz", np.array(131 if x_type == U8 else -7, np.uint8 if x_type == U8 else np.int8))]
    inits.append(_init("wz", wz))
    return _model(
        "ConvInteger",
        [("x", x_type, [2, cin, 9, 11])],
        [("y", I32, None)],
        inits,
        domain="",
        opset=13,
        pads=list(pads),
        strides=[2, 1],
        group=group,
    )


@pytest.mark.parametrize(("per_channel", "group", "seed"), [(False, 1, 0), (True, 1, 1), (False, 2, 2)])
def test_conv_integer_expansion_is_exact(per_channel, group, seed):
    rng = np.random.default_rng(seed)
    m = _conv_integer(U8, per_channel, rng, group)
    feeds = _feeds(m, rng)
    expanded = prepare_for_tvm(m)
    assert "ConvInteger" not in {n.op_type for n in expanded.graph.node}
    got = ReferenceEvaluator(expanded).run(None, feeds)[0]  # onnxruntime's CPU has no float64 Conv
    assert got.dtype == np.int32
    want = ReferenceEvaluator(m).run(None, feeds)[0]
    np.testing.assert_array_equal(got, want)
    if not per_channel:  # onnxruntime's kernel takes a per-tensor weight zero point only
        np.testing.assert_array_equal(got, _ort(m, feeds)[0])


def test_conv_integer_expansion_through_tvm_llvm():
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    rng = np.random.default_rng(3)
    m = _conv_integer(U8, False, rng)
    feeds = _feeds(m, rng)
    ex = tvm.compile(from_onnx(prepare_for_tvm(m), keep_params_in_input=False), target="llvm")
    vm = tvm.relax.VirtualMachine(ex, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(feeds["x"])).numpy()
    np.testing.assert_array_equal(got, ReferenceEvaluator(m).run(None, feeds)[0])


def test_shapes_flow_through_contrib_ops_and_subgraphs_carry_their_domain():
    """A node after a contrib op gets its input's shape (ONNX's shape inference stops at com.microsoft ops), and a
    contrib node's subgraph imports com.microsoft so onnxruntime can be its reference."""
    x = helper.make_tensor_value_info("x", F, ["batch", 5, 16])
    gelu = helper.make_node("FastGelu", ["x"], ["g"], domain=MS, name="gelu")
    after = helper.make_node("DynamicQuantizeLinear", ["g"], ["q", "s", "z"], name="dq")
    g = helper.make_graph([gelu, after], "g", [x], [helper.make_tensor_value_info("q", U8, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    sub_gelu, sub_dq = extract_nodes(m, list(m.graph.node))
    dims = [d.dim_param or d.dim_value for d in sub_dq.model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 5, 16]
    assert {o.domain for o in sub_gelu.model.opset_import} == {"", MS}
    feeds = {"in0": np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)}
    assert _ort(sub_gelu.model, feeds)[0].shape == (2, 5, 16)


def test_generated_dim_names_do_not_split_identical_nodes():
    """Two identical nodes whose inputs have unknown extents that shape inference names anew (unk__N) share one
    subgraph key; exporters' "?" and -1 dims on a graph input become named dims of their own."""
    x = helper.make_tensor_value_info("x", F, [-1, 3, "?", "?"])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [3])
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r1"]),
        helper.make_node("Reshape", ["x", "shape"], ["r2"]),
        helper.make_node("DynamicQuantizeLinear", ["r1"], ["q1", "s1", "z1"], name="a"),
        helper.make_node("DynamicQuantizeLinear", ["r2"], ["q2", "s2", "z2"], name="b"),
    ]
    g = helper.make_graph(nodes, "g", [x, shape], [helper.make_tensor_value_info("q1", U8, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    sa, sb = extract_nodes(m, nodes[2:])
    assert sa.key == sb.key
    first = extract_nodes(m, [nodes[0]])[0]
    dims = [d.dim_param or d.dim_value for d in first.model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["x_0", 3, "x_2", "x_3"]


def _conformance(prefix: str):
    import onnx.backend.test.case.node as node_cases

    return [c for c in node_cases.collect_testcases(None) if c.name.startswith(prefix) and "expanded" not in c.name]


@pytest.mark.parametrize("case", _conformance("test_col2im"), ids=lambda c: c.name)
def test_col2im_expansion_matches_the_conformance_outputs(case):
    """Col2Im with constant image and block shapes (as in real models) as a gather of the columns and a sum."""
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    ((inputs, outputs),) = case.data_sets[:1]
    feeds = dict(zip([i.name for i in m.graph.input], inputs))
    for vi in list(m.graph.input)[1:]:
        m.graph.initializer.append(numpy_helper.from_array(feeds.pop(vi.name), vi.name))
        m.graph.input.remove(vi)
    expanded = prepare_for_tvm(m)
    assert "Col2Im" not in {n.op_type for n in expanded.graph.node}
    np.testing.assert_array_equal(ReferenceEvaluator(expanded).run(None, feeds)[0], outputs[0])
    if case.name == "test_col2im_pads":
        import tvm
        from tvm.relax.frontend.onnx import from_onnx

        ex = tvm.compile(from_onnx(expanded, keep_params_in_input=False), target="llvm")
        got = tvm.relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(feeds["input"])).numpy()
        np.testing.assert_allclose(got, outputs[0], rtol=1e-6)


def test_rms_normalization_over_leading_axes_lowers():
    """TVM's converter fails RMSNormalization over axes from 0; the registry expands its body there."""
    from opforge.lower import lower_subgraph
    from opforge.testing.conformance import case_subgraph, load_cases

    for case in load_cases({"test_rms_normalization_2d_axis0", "test_rms_normalization_3d_axis_negative_3_epsilon"}):
        assert lower_subgraph(case_subgraph(case)[0]).launches


def test_shapes_flow_past_a_quantized_lstm_and_a_computed_reshape():
    """quantize_dynamic's DynamicQuantizeLSTM: no exact lowering, but the nodes after it get shapes (an LSTM stands
    in for it in shape inference), also through a Reshape whose shape is computed with Shape ops."""
    rng = np.random.default_rng(0)
    t, b, i, h = 5, 1, 8, 16
    inits = [
        _init("W", rng.integers(-128, 128, (1, i, 4 * h)).astype(np.int8)),
        _init("R", rng.integers(-128, 128, (1, h, 4 * h)).astype(np.int8)),
        _init("ws", np.full((1,), 0.01, np.float32)),
        _init("wz", np.zeros((1,), np.int8)),
        _init("rs", np.full((1,), 0.01, np.float32)),
        _init("rz", np.zeros((1,), np.int8)),
        _init("zero", np.array([0], np.int64)),
        _init("minus1", np.array([-1], np.int64)),
    ]
    lstm = helper.make_node(
        "DynamicQuantizeLSTM",
        ["x", "W", "R", "", "", "", "", "", "ws", "wz", "rs", "rz"],
        ["y"],
        domain=MS,
        hidden_size=h,
        name="lstm",
    )
    nodes = [
        lstm,
        helper.make_node("Shape", ["y"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["t"], axis=0),
        helper.make_node("Concat", ["t", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["y", "target"], ["flat"]),
        helper.make_node("DynamicQuantizeLinear", ["flat"], ["q", "qs", "qz"], name="dq"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F, [t, b, i])],
        [helper.make_tensor_value_info("q", U8, None)],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    sub, lstm_sub = extract_nodes(m, [nodes[-1], lstm])
    assert [d.dim_value for d in sub.model.graph.input[0].type.tensor_type.shape.dim] == [t, b * h]
    from opforge.core.errors import OpforgeError
    from opforge.lower import lower_subgraph

    with pytest.raises(OpforgeError, match="recurrent ops"):
        lower_subgraph(lstm_sub)


@pytest.mark.parametrize("case", _conformance("test_rotary_embedding"), ids=lambda c: c.name)
def test_rotary_embedding_expansion_matches_the_conformance_outputs(case):
    ((inputs, outputs),) = case.data_sets[:1]
    feeds = dict(zip([i.name for i in case.model.graph.input], inputs))
    expanded = prepare_for_tvm(case.model)
    assert "RotaryEmbedding" not in {n.op_type for n in expanded.graph.node}
    np.testing.assert_allclose(ReferenceEvaluator(expanded).run(None, feeds)[0], outputs[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "case", _conformance("test_qlinearmatmul") + _conformance("test_qlinearconv"), ids=lambda c: c.name
)
def test_qlinear_expansions_match_the_conformance_outputs_exactly(case):
    ((inputs, outputs),) = case.data_sets[:1]
    feeds = dict(zip([i.name for i in case.model.graph.input], inputs))
    expanded = prepare_for_tvm(case.model)
    assert not {"QLinearMatMul", "QLinearConv"} & {n.op_type for n in expanded.graph.node}
    np.testing.assert_array_equal(ReferenceEvaluator(expanded).run(None, feeds)[0], outputs[0])


@pytest.mark.parametrize("opset", [10, 13])
@pytest.mark.parametrize("out_type", [U8, I8])
def test_requantization_rounds_half_to_even_and_saturates(opset, out_type):
    """Before opset 11 (no Round, Clip with attributes) the rounding is written with Floor and comparisons."""
    from opforge.ops.base import Emitter
    from opforge.ops.qlinear import _saturate

    y = np.array([-300.0, -128.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.49999, 126.5, 127.5, 254.5, 255.5, 400.0])
    g = helper.make_graph(
        [],
        "g",
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [len(y)])],
        [helper.make_tensor_value_info("q", out_type, [len(y)])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    e = Emitter(m, helper.make_node("Identity", ["y"], ["q"]), {}, set())
    _saturate(e, "y", out_type, "q")
    m.graph.node.extend(e.nodes)
    info = np.iinfo(helper.tensor_dtype_to_np_dtype(out_type))
    want = np.clip(np.rint(y), info.min, info.max).astype(info.dtype)
    np.testing.assert_array_equal(ReferenceEvaluator(m).run(None, {"y": y})[0], want)


def test_missing_shape_names_where_inference_stops_when_inputs_are_known():
    """Every graph input shaped (a scalar given as 'c:' included): a node past an If whose branches differ in rank
    is told where shape inference stops, not to give --input-shapes."""
    from opforge.extract.subgraph import extract_each

    then = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"])], "t", [], [helper.make_tensor_value_info("t", F, None)]
    )
    other = helper.make_graph(
        [helper.make_node("Unsqueeze", ["x", "axes"], ["e"])], "e", [], [helper.make_tensor_value_info("e", F, None)]
    )
    nodes = [
        helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="if"),
        helper.make_node("Relu", ["y"], ["r"], name="relu"),
        helper.make_node("DynamicQuantizeLinear", ["r"], ["q", "s", "z"], name="dq"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F, None), helper.make_tensor_value_info("c", TensorProto.BOOL, None)],
        [helper.make_tensor_value_info("q", U8, None)],
        initializer=[_init("axes", np.array([0], np.int64))],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    (err,) = extract_each(m, [nodes[-1]], {"x": [4], "c": []})
    assert "stops at If node 'if'" in str(err) and "--input-shapes" not in str(err)
    (err,) = extract_each(m, [nodes[-1]], {"x": [4]})  # c's shape unknown: then the hint helps
    assert "--input-shapes" in str(err)
