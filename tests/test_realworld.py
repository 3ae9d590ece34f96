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
    import opforge.runtime.launcher as launcher
    import opforge.verify.plugins as plugins
    from opforge.core.manifest import Manifest

    class Ctx:
        def __init__(self, _):
            self.name = "stand-in (no GPU)"

    def verify(folder):
        return [
            {"plugin": p.name, "nodes": p.nodes, "ok": not (fail_first and k == 0), "error": ""}
            for k, p in enumerate(Manifest.load(folder).plugins)
        ]

    monkeypatch.setattr(launcher, "Context", Ctx)
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
