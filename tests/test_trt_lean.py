"""TensorRT's own plugin registry in the loop, on the CPU: TensorRT 11.4's lean runtime (PyPI wheels
tensorrt-lean-cu13-libs/-bindings) loads the libraries the tests build and creates every plugin from fields made
as TensorRT's ONNX parser makes them; a contradicting field must be refused. (Whether the refusal's message reaches
the application's logger needs trt.Runtime, i.e. a GPU: scripts/trt_lean.py checks that on the GPU machine.)

Each library is loaded in its own process (scripts/trt_lean.py `one`): libraries of one session may register the
same plugin names, which one registry refuses."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tensorrt_lean_bindings", reason="pip install tensorrt-lean-cu13-libs tensorrt-lean-cu13-bindings")

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "trt_lean.py"


def _script():
    spec = importlib.util.spec_from_file_location("trt_lean_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _in_registry(library: Path, model: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "one", str(library), str(model)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(result: dict, plugins: list) -> None:
    summary, rows = result["summary"], result["rows"]
    assert summary["loaded"], summary
    assert sorted(r["plugin"] for r in rows) == sorted(p.name for p in plugins)
    failed = [r for r in rows if not (r["found"] and r["created_build"] and r["created_runtime"])]
    assert not failed, failed
    contradiction = summary["contradiction"]
    assert contradiction is not None and contradiction["refused"] is True, contradiction


@pytest.mark.slow
def test_every_case_plugin_is_created_by_tensorrts_registry(generated_cases):
    (library,) = generated_cases.libraries
    _check(_in_registry(library, generated_cases.model), generated_cases.plugins)


@pytest.mark.slow
def test_every_example_plugin_is_created_by_tensorrts_registry(generated_example):
    (library,) = generated_example.libraries
    _check(_in_registry(library, generated_example.model), generated_example.plugins)


def test_contradiction_changes_the_value_but_not_the_type():
    script = _script()
    from opforge.core.fields import parser_field

    for attr in (helper.make_attribute("a", [3, 4]), helper.make_attribute("b", 0.5), helper.make_attribute("c", "x")):
        good = parser_field(attr)
        bad = script.contradiction(good)
        assert bad[0] == good[0] and bad[1] == good[1] and bad[2] != good[2]


@pytest.mark.slow
def test_int64_constant_outside_int32_survives_tensorrts_field_mapping(tmp_path):
    """Add(x, 2**40) on int64: the constant becomes a STRING attribute (the parser would narrow an INT/INTS to
    int32); TensorRT's registry creates the plugin from it, and refuses 2**40 + 1."""
    from opforge.generate import generate

    const = np.array([2**40, -(2**35), 7], dtype=np.int64)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"], name="add_big")],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [4, 3])],
        [numpy_helper.from_array(const, "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    src = tmp_path / "big.onnx"
    onnx.save(model, str(src))
    result = generate(src, tmp_path / "out", node_names=["add_big"])
    (spec,) = result.plugins
    (attr,) = spec.attrs
    assert attr.field_type == "kCHAR"
    assert attr.int64_as_text
    rewritten = onnx.load(str(result.model))
    (node,) = [n for n in rewritten.graph.node if n.domain == "opforge"]
    assert node.attribute[0].type == onnx.AttributeProto.STRING
    assert node.attribute[0].s.decode() == "1099511627776,-34359738368,7"

    registry = _in_registry(result.libraries[0], result.model)
    _check(registry, result.plugins)
    # The contradiction of a text field is other text; also check a numerically different int64 is refused.
    (row,) = registry["rows"]
    assert row["fields"] == [f"{attr.name}:kCHAR[{len('1099511627776,-34359738368,7')}]"]
    node.attribute[0].s = b"1099511627777,-34359738368,7"
    bad_model = tmp_path / "bad.onnx"
    onnx.save(rewritten, str(bad_model))
    (bad,) = _in_registry(result.libraries[0], bad_model)["rows"]
    assert bad["created_build"] is False
    assert bad["created_runtime"] is False
