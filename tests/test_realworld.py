"""scripts/realworld.py on the CPU: the corpus is pinned and large enough, the models built here are valid, the build
phase runs `opforge auto` on a derived model and the run phase writes the summary the lead's GPU run reports (with
the harness replaced by a stand-in, since there is no GPU here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("realworld", ROOT / "scripts" / "realworld.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["realworld"] = module
    spec.loader.exec_module(module)
    return module


def test_corpus_is_pinned_and_large_enough():
    rw = _script()
    rows = rw.corpus()
    assert len(rows) >= 12
    assert sum(r["kind"] == "shipped" for r in rows) >= 10
    for r in rows:
        if r["kind"] != "synthetic":
            package = r["source"].split("==")[0]
            assert r["source"].startswith(f"{package}=={rw.WHEELS[package]}:")
        else:
            assert r["source"].startswith("synthetic: ")


@pytest.mark.parametrize("name", ["rmsnorm-opset23", "rotary-opset23", "attention-opset23", "col2im-opset18"])
def test_models_built_here_are_valid(name, tmp_path, monkeypatch):
    monkeypatch.setenv("REALWORLD_CACHE", str(tmp_path))
    rw = _script()
    m = onnx.load(str(rw.synthetic_model(name)))
    onnx.checker.check_model(m, full_check=True)


def _fake_bundle(bundle: Path, rows: list[dict]) -> None:
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "build.json").write_text(json.dumps({"commit": "abc", "rows": rows}))


def _stand_in_gpu(monkeypatch, fail_first: bool = False):
    import opforge.runtime.gpu as gpu
    import opforge.verify.plugins as plugins
    from opforge.core.manifest import Manifest

    def verify(folder):
        return [
            {"plugin": p.name, "nodes": p.nodes, "ok": not (fail_first and k == 0), "error": ""}
            for k, p in enumerate(Manifest.load(folder).plugins)
        ]

    monkeypatch.setattr(gpu, "gpu_name", lambda: "stand-in (no GPU)")
    monkeypatch.setattr(plugins, "verify_folder", verify)


def test_run_phase_summary_without_plugins(tmp_path, monkeypatch):
    rw = _script()
    _stand_in_gpu(monkeypatch)
    rows = [
        {
            "model": "a",
            "source": "s",
            "kind": "shipped",
            "nodes": 5,
            "rejected": 0,
            "rejected_eligible": 0,
            "lowered": 0,
            "plugin_nodes": 0,
            "unsupported": {},
            "model_errors": [],
            "parser_accepts_after": True,
            "folder": None,
        },
        {
            "model": "b",
            "source": "s",
            "kind": "derived",
            "nodes": 9,
            "rejected": 2,
            "rejected_eligible": 1,
            "lowered": 0,
            "plugin_nodes": 0,
            "unsupported": {"NonZero": {"nodes": 1, "why": "data-dependent"}},
            "model_errors": [],
            "parser_accepts_after": False,
            "folder": None,
        },
    ]
    _fake_bundle(tmp_path / "b", rows)
    assert rw.run(tmp_path / "b", tmp_path / "out") == 0
    result = json.loads((tmp_path / "out" / "realworld-h100.json").read_text())
    s = result["summary"]
    assert s["models"] == 2 and s["rejected_eligible_nodes"] == 1 and s["verified_plugin_nodes"] == 0
    assert s["models_parser_accepts_after"] == 1
    md = (tmp_path / "out" / "realworld-h100.md").read_text()
    assert "NonZero x1: data-dependent" in md and "stand-in (no GPU)" in md


@pytest.mark.slow
def test_build_and_run_phases_on_a_transformer_block(tmp_path, monkeypatch):
    """onnxruntime's transformer optimizer's com.microsoft ops through `opforge auto` (TVM + nvcc), then the run
    phase over the built folder (harness stood in for)."""
    monkeypatch.setenv("REALWORLD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("REALWORLD_ONLY", "ffn-encoder-ortopt")
    rw = _script()
    rw.build(tmp_path / "bundle")
    (row,) = json.loads((tmp_path / "bundle" / "build.json").read_text())["rows"]
    assert row.get("error") is None, row.get("traceback")
    assert row["rejected"] == 4 and row["lowered"] == 4 and row["plugin_nodes"] == 4
    assert row["parser_accepts_after"] is True and row["remaining"] == []
    from opforge.core.manifest import Manifest

    first = Manifest.load(tmp_path / "bundle" / row["folder"]).plugins[0]
    _stand_in_gpu(monkeypatch, fail_first=True)
    rw.run(tmp_path / "bundle", tmp_path / "out")
    result = json.loads((tmp_path / "out" / "realworld-h100.json").read_text())
    s = result["summary"]
    assert s["models"] == 1 and s["plugin_nodes"] == 4
    assert s["verified_plugin_nodes"] == 4 - len(first.nodes)
    assert result["rows"][0]["plugins_failed"][0]["plugin"] == first.name


def _tiny_quantized(tmp_path: Path) -> Path:
    """Three same-shaped Convs and a MatMul, through onnxruntime's quantize_dynamic (seeded weights)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import quantize_dynamic

    rng = np.random.default_rng(16)
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32), f"w{k}") for k in range(3)
    ]
    inits.append(numpy_helper.from_array((rng.standard_normal((8 * 8 * 8, 10)) * 0.05).astype(np.float32), "fc"))
    inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "shape"))
    nodes, x = [], "x"
    for k in range(3):
        nodes += [
            helper.make_node("Conv", [x, f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{k}"], [f"r{k}"]),
        ]
        x = f"r{k}"
    nodes += [helper.make_node("Reshape", [x, "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "fc"], ["y"])]
    g = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    src, out = tmp_path / "tiny.onnx", tmp_path / "tiny_q.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(src))
    quantize_dynamic(str(src), str(out))
    return out


@pytest.mark.slow
def test_auto_on_a_dynamically_quantized_model(tmp_path, monkeypatch):
    """quantize_dynamic's ConvInteger, MatMulInteger and DynamicQuantizeLinear: every node gets a plugin, the
    three ConvIntegers (different weights) share one, weights stay plugin inputs (not fields), and auto exits 0
    because the rewritten model leaves the parser only opforge's plugins."""
    import subprocess

    monkeypatch.chdir(tmp_path)  # quantize_dynamic leaves <uuid>.data scratch files in the working folder
    path = _tiny_quantized(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "opforge",
            "auto",
            str(path),
            "-o",
            str(tmp_path / "out"),
            "--json",
            "--verify",
            "never",
            "--no-fuse",  # one plugin per node: the weights mechanism is per node (fusion would pair DQL+ConvInteger)
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    by_op = {p["op_type"]: p for p in result["plugins"]}
    assert len(by_op["ConvInteger"]["nodes"]) == 3 and result["ok"] is True
    rewritten = onnx.load(str(tmp_path / "out" / "tiny_q.opforge.onnx"))
    inits = {t.name for t in rewritten.graph.initializer}
    conv = next(n for n in rewritten.graph.node if n.op_type == by_op["ConvInteger"]["name"])
    assert conv.input[1] in inits and all(a.name == "pads" for a in conv.attribute)
