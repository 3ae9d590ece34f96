"""Bad input: one clear line on stderr, a non-zero exit, the input untouched, nothing half-written."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from opforge.examples.example_model import example_model


def _opforge(*args, env=None, cwd=None):
    e = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "opforge.cli", *map(str, args)], capture_output=True, text=True, env=e, cwd=cwd
    )


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def example(tmp_path):
    p = tmp_path / "example.onnx"
    onnx.save(example_model(), str(p))
    return p


def _assert_clean_failure(proc, out: Path | None, needle: str, code: int | None = None):
    assert proc.returncode != 0
    if code is not None:
        assert proc.returncode == code
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("opforge: error")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    if out is not None and out.exists():
        assert not any(p.name.startswith(".opforge-staging") for p in out.iterdir())
        assert not (out / "manifest.json").exists()


def test_version_and_help():
    assert _opforge("--version").stdout.startswith("opforge ")
    assert "opforge generate --example" in _opforge("--help").stdout


def test_missing_node(example, tmp_path):
    before = _digest(example)
    proc = _opforge("generate", example, "-o", tmp_path / "out", "-n", "no_such_node")
    _assert_clean_failure(proc, tmp_path / "out", "'no_such_node'", code=2)
    assert _digest(example) == before


def test_unreadable_and_malformed_model(tmp_path):
    _assert_clean_failure(
        _opforge("generate", tmp_path / "nope.onnx", "-o", tmp_path / "o", "-t", "Relu"), None, "no such model file"
    )
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage\x00\x01")
    _assert_clean_failure(_opforge("generate", bad, "-o", tmp_path / "o", "-t", "Relu"), None, "not a readable")


def test_node_tvm_cannot_lower(tmp_path):
    g = helper.make_graph(
        [helper.make_node("Det", ["x"], ["y"], name="det")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    p = tmp_path / "det.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(p))
    before = _digest(p)
    proc = _opforge("generate", p, "-o", tmp_path / "out", "-n", "det")
    _assert_clean_failure(proc, tmp_path / "out", "node 'det' (Det)", code=1)
    assert _digest(p) == before


def test_input_without_shape(tmp_path):
    g = helper.make_graph(
        [helper.make_node("Erf", ["x"], ["y"], name="erf")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    p = tmp_path / "noshape.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(p))
    _assert_clean_failure(
        _opforge("generate", p, "-o", tmp_path / "out", "-n", "erf"), tmp_path / "out", "input 'x' has no shape"
    )


def test_plugin_name_that_is_an_onnx_op(example, tmp_path):
    proc = _opforge("generate", example, "-o", tmp_path / "out", "-p", '{"mask_ids": "Relu"}')
    _assert_clean_failure(proc, tmp_path / "out", "is an ONNX op type", code=2)


def test_output_is_the_input(example):
    before = _digest(example)
    proc = _opforge("generate", example, "-o", example, "-t", "BitwiseAnd")
    _assert_clean_failure(proc, None, "is a file", code=2)
    assert _digest(example) == before


def test_nvcc_absent(example, tmp_path):
    proc = _opforge(
        "generate", example, "-o", tmp_path / "out", "-t", "BitwiseAnd", env={"OPFORGE_NVCC": str(tmp_path / "no-nvcc")}
    )
    _assert_clean_failure(proc, tmp_path / "out", "nvcc not found")


def test_headers_missing_and_no_download(example, tmp_path):
    env = {
        "OPFORGE_CACHE": str(tmp_path / "empty-cache"),
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_FIND_LINKS": "",
    }
    proc = _opforge("generate", example, "-o", tmp_path / "out", "-t", "BitwiseAnd", env=env)
    _assert_clean_failure(proc, tmp_path / "out", "TensorRT headers not found")
    bad = tmp_path / "not-trt"
    bad.mkdir()
    proc = _opforge(
        "generate", example, "-o", tmp_path / "out", "-t", "BitwiseAnd", env={"TENSORRT_INCLUDE_DIR": str(bad)}
    )
    _assert_clean_failure(proc, tmp_path / "out", "TENSORRT_INCLUDE_DIR")


def test_failed_run_leaves_earlier_output_intact(example, tmp_path):
    out = tmp_path / "out"
    assert _opforge("generate", example, "-o", out, "-t", "BitwiseAnd", "-q").returncode == 0
    snapshot = {p.relative_to(out): _digest(p) for p in out.rglob("*") if p.is_file()}
    proc = _opforge("generate", example, "-o", out, "-t", "BitwiseAnd", env={"OPFORGE_NVCC": "/nonexistent"})
    assert proc.returncode != 0
    assert {p.relative_to(out): _digest(p) for p in out.rglob("*") if p.is_file()} == snapshot


def test_example_command_json(tmp_path):
    env = {"OPFORGE_CACHE": str(tmp_path / "c")}
    headers = Path(os.environ["OPFORGE_CACHE"]) / "tensorrt-include-10.14"
    if headers.is_dir() and "TENSORRT_INCLUDE_DIR" not in os.environ:
        env["TENSORRT_INCLUDE_DIR"] = str(headers)  # the session's headers: no second download
    proc = _opforge("generate", "--example", "-o", tmp_path / "ex", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    # a fresh cache, so TVM lowers every node: none of its (or LLVM's) messages reach the user without -v
    assert not [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("opforge")], proc.stderr
    import json

    summary = json.loads(proc.stdout)
    # BitwiseAnd -> BitwiseXor -> BitwiseNot feed each other: one fused plugin; BitShift and Compress stand alone.
    assert sorted(len(p["nodes"]) for p in summary["plugins"]) == [1, 1, 1]
    ops = sorted(p["op_type"] for p in summary["plugins"])
    assert ops == ["BitShift", "BitwiseAnd+BitwiseXor+BitwiseNot", "Compress"]
    assert Path(summary["libraries"][0]).is_file()
    assert np.all([p["kernels"] >= 1 for p in summary["plugins"]])
