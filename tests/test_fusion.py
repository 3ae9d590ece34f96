"""Fused plugins: selected nodes that feed each other become one plugin (one subgraph, one plan); groups stay convex;
the rewritten model stays topologically sorted; the fused subgraph computes what the nodes computed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from opforge.emit.onnx_rewrite import Replacement, rewrite_model
from opforge.extract.groups import fusion_groups
from opforge.extract.subgraph import extract_groups

F = TensorProto.FLOAT


def _graph(nodes, inputs, outputs, opset=20, inits=()):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, s) for n, s in outputs],
        initializer=list(inits),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _chain_model():
    """x -> LayerNormalization -> Gelu(tanh) -> ReduceL2(last axis), with a Relu reading the LayerNorm output."""
    scale = onnx.numpy_helper.from_array(np.linspace(0.5, 1.5, 64).astype(np.float32), "scale")
    bias = onnx.numpy_helper.from_array(np.linspace(-0.1, 0.1, 64).astype(np.float32), "bias")
    axes = onnx.numpy_helper.from_array(np.array([-1], np.int64), "axes")
    nodes = [
        helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["ln"], name="ln", axis=-1),
        helper.make_node("Gelu", ["ln"], ["g"], name="gelu", approximate="tanh"),
        helper.make_node("ReduceL2", ["g", "axes"], ["y"], name="l2", keepdims=0),
        helper.make_node("Relu", ["ln"], ["side"], name="side"),
    ]
    outs = [("y", ["batch", 7]), ("side", ["batch", 7, 64])]
    return _graph(nodes, [("x", ["batch", 7, 64])], outs, inits=[scale, bias, axes])


def test_a_chain_is_one_group_and_others_stay_single():
    m = _chain_model()
    by = {n.name: n for n in m.graph.node}
    groups = fusion_groups(m, [by["ln"], by["gelu"], by["l2"]])
    assert [[n.name for n in g] for g in groups] == [["ln", "gelu", "l2"]]
    assert [[n.name for n in g] for g in fusion_groups(m, [by["gelu"], by["side"]])] == [["gelu"], ["side"]]


def test_a_group_that_would_feed_itself_is_split():
    """a -> X (not selected) -> b and a -> b: fusing a and b would make the fused node read its own output."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="a"),
        helper.make_node("Neg", ["a"], ["xa"], name="X"),
        helper.make_node("Add", ["a", "xa"], ["b"], name="b"),
    ]
    m = _graph(nodes, [("x", [4])], [("b", [4])])
    by = {n.name: n for n in m.graph.node}
    assert [[n.name for n in g] for g in fusion_groups(m, [by["a"], by["b"]])] == [["a"], ["b"]]


def test_fused_subgraph_computes_the_nodes():
    m = _chain_model()
    by = {n.name: n for n in m.graph.node}
    (sub,) = extract_groups(m, [[by["ln"], by["gelu"], by["l2"]]])
    assert sub.node_names == ["ln", "gelu", "l2"]
    assert sub.input_names == ["x"]
    assert sub.output_names == ["ln", "y"]  # ln is also read by the unselected Relu
    assert [len(c) for c in sub.member_constants] == [2, 0, 1]
    x = np.random.default_rng(5).standard_normal((3, 7, 64)).astype(np.float32)
    want = ReferenceEvaluator(m).run(["ln", "y"], {"x": x})
    got = ReferenceEvaluator(sub.model).run(None, {"in0": x})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_rewrite_keeps_a_topological_order():
    """The fused node takes the first member's place but must come after nothing it feeds: X reads a's output
    and sits between a and b."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="a"),
        helper.make_node("Neg", ["a"], ["xa"], name="X"),
        helper.make_node("Exp", ["x"], ["e"], name="e"),
        helper.make_node("Add", ["a", "e"], ["b"], name="b"),
    ]
    m = _graph(nodes, [("x", [4])], [("b", [4]), ("xa", [4])])
    r = Replacement("Fused_opf0", ["a", "e", "b"], ["x"], ["a", "b"], [])
    out = rewrite_model(m, [r])
    names = [n.name for n in out.graph.node]
    assert names == ["a", "X"]
    onnx.checker.check_model(out)


@pytest.mark.slow
def test_generate_fuses_the_chain_into_one_plugin(tmp_path):
    """One plugin for the three nodes, its fields prefixed per member; --no-fuse gives three."""
    from opforge.generate import generate

    src = tmp_path / "chain.onnx"
    onnx.save(_chain_model(), str(src))
    fused = generate(src, tmp_path / "fused", node_names=["ln", "gelu", "l2"])
    assert len(fused.plugins) == 1
    (spec,) = fused.plugins
    assert spec.plan.op_type == "LayerNormalization+Gelu+ReduceL2"
    assert {a.name for a in spec.attrs} >= {"n0_axis", "n1_approximate", "n2_keepdims", "n2_axes"}
    rewritten = onnx.load(str(fused.model))
    assert [n.op_type for n in rewritten.graph.node] == [spec.name, "Relu"]
    onnx.checker.check_model(rewritten)
    single = generate(src, tmp_path / "single", node_names=["ln", "gelu", "l2"], fuse=False)
    assert len(single.plugins) == 3
