"""`opforge inspect` and `opforge auto` on the CPU machine: the real networks shipped in the onnx wheel, the built-in
example, and bad input."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from opforge.examples.example_model import REJECTED_OP_TYPES, example_model
from opforge.inspect_model import inspect_model

LIGHT = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx")))


def _opforge(*args):
    return subprocess.run([sys.executable, "-m", "opforge.cli", *map(str, args)], capture_output=True, text=True)


def test_light_models_exist():
    assert len(LIGHT) >= 5


@pytest.mark.parametrize("path", LIGHT, ids=[Path(p).stem for p in LIGHT])
def test_inspect_and_auto_on_real_networks(path, tmp_path):
    proc = _opforge("inspect", path, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["nodes"] == len(onnx.load(path, load_external_data=False).graph.node)
    assert sum(s["nodes"] for s in report["subgraphs"]) == report["nodes"]
    proc = _opforge("auto", path, "-o", tmp_path / "out", "--json", "--verify", "never")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "report.md").is_file() and (tmp_path / "out" / "report.html").is_file()


def test_inspect_example_finds_the_rejected_ops_and_can_lower_them():
    report = inspect_model(example_model())
    assert {r.op_type for r in report.rejected} == set(REJECTED_OP_TYPES)
    assert all(r.plugin for r in report.rejected)


def test_auto_example_leaves_no_lowerable_rejected_node(tmp_path):
    src = tmp_path / "example.onnx"
    onnx.save(example_model(), str(src))
    proc = _opforge("auto", src, "-o", tmp_path / "out", "--json", "--verify", "never")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # The three bitwise nodes feed each other and become one fused plugin.
    ops = {p["op_type"] for p in result["plugins"]}
    assert ops == {"BitShift", "Compress", "BitwiseAnd+BitwiseXor+BitwiseNot"}
    assert result["after"]["other_errors"] == []
    assert len(result["after"]["plugin_lookups"]) == len(ops)
    again = inspect_model(str(tmp_path / "out" / "example.opforge.onnx"), try_lowering=False)
    assert {r.op_type for r in again.rejected} == {p["name"] for p in result["plugins"]}
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<table>" in html and "<svg" in html


def test_builtin_table_fallback():
    from opforge.trt_parser import parse_with_table

    report = parse_with_table(example_model())
    assert "built-in table" in report.parser
    assert {e.op_type for e in report.errors} >= {"BitwiseAnd", "Compress"}


def _fail(proc, needle):
    assert proc.returncode != 0
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("opforge: error")]
    assert len(err) == 1 and needle in err[0], proc.stderr


def test_bad_input(tmp_path):
    # external data missing
    x = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[x],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    ext = tmp_path / "ext.onnx"
    onnx.save(m, str(ext), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").unlink()
    _fail(_opforge("auto", ext, "-o", tmp_path / "o1"), "external file 'w.bin'")
    # no shapes and none given
    g = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["y"], name="r")],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    p = tmp_path / "noshape.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(p))
    _fail(_opforge("auto", p, "-o", tmp_path / "o2"), "have no shape")
    # empty graph
    p = tmp_path / "empty.onnx"
    onnx.save(
        helper.make_model(helper.make_graph([], "g", [], []), opset_imports=[helper.make_opsetid("", 18)]), str(p)
    )
    _fail(_opforge("inspect", p), "has no nodes")
    # an opset the frontend does not know
    g = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["y"], name="r")],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    p = tmp_path / "future.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 99)]), str(p))
    _fail(_opforge("auto", p, "-o", tmp_path / "o3"), "opset 99")


def _save(tmp_path, name, nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_auto_fails_when_a_rejected_node_stays(tmp_path):
    """Det (TVM's frontend has no converter): opforge makes no plugin, so the model still does not parse; auto
    exits 1 naming the node, and report.md names it with the reason, not 'No plugin was needed'."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])
    path = _save(
        tmp_path,
        "det",
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Det", ["r"], ["d"], name="det")],
        [x],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, None)],
    )
    proc = _opforge("auto", path, "-o", tmp_path / "out", "--json", "--verify", "never")
    assert proc.returncode == 1, proc.stderr
    assert "still rejects 1" in proc.stderr and "det (Det)" in proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is False and [e["node"] for e in result["after"]["other_errors"]] == ["det"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "still rejects the model" in md and "| det | Det |" in md and "No plugin was needed" not in md


def test_model_level_parser_failure_is_reported(tmp_path):
    """A uint32 initializer fails the whole model in TensorRT's parser, before any node: inspect says so (and
    still gives node verdicts, from a re-parse with the initializer widened); auto exits 1."""
    k = numpy_helper.from_array(np.arange(5, dtype=np.uint32), "k")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5])
    nodes = [
        helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Add", ["x", "kf"], ["y"], name="add"),
    ]
    path = _save(tmp_path, "u32", nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 5])], [k])
    report = inspect_model(str(path), try_lowering=False)
    assert report.rejected == [] and len(report.model_errors) == 1 and not report.parser_accepts
    assert "'k' is uint32" in report.model_errors[0].note and "cast" in report.model_errors[0].note
    proc = _opforge("auto", path, "-o", tmp_path / "out", "--verify", "never")
    assert proc.returncode == 1 and "(the model)" in proc.stderr, proc.stderr
    md = (tmp_path / "out" / "report.md").read_text()
    assert "fails the model as a whole" in md and "Rejected: 0" in md


def test_unsorted_nodes_are_sorted_before_work():
    """onnxruntime's quantize_dynamic leaves some models (silero-vad's, with If subgraphs) with nodes out of
    topological order; sort_nodes orders them, counting names a subgraph reads from the outer scope."""
    from opforge.inspect_model import sort_nodes

    then = helper.make_graph(
        [helper.make_node("Identity", ["r"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])],
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["r"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [4])],
    )
    nodes = [
        helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="if"),
        helper.make_node("Relu", ["x"], ["r"], name="relu"),  # read only inside the branches, yet listed after
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(m)
    assert sort_nodes(m) and [n.name for n in m.graph.node] == ["relu", "if"]
    onnx.checker.check_model(m)
    assert not sort_nodes(m)
