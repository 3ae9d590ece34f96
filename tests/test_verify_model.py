"""The whole-model check (opforge.verify.model) on the CPU: scripts/verify_model.py's build phase, the executor with
the plugins computed by onnxruntime on their subgraphs (the CPU stand-in for the harness), divergence detection with
a runner that perturbs one plugin, inputs from .npz and from the op registry's domains, and the run phase's command
without TVM. The GPU half is `scripts/verify_model.py run`."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from opforge.core.errors import UsageError
from opforge.core.manifest import Manifest
from opforge.verify.model import (
    PluginCall,
    find_input_model,
    load_inputs,
    random_inputs,
    subgraph_runner,
    verify_model,
)

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("verify_model_script", ROOT / "scripts" / "verify_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verify_model") / "bundle"
    _script().build(root)
    return root


def _perturb(node_name: str, delta: float):
    def perturb(call: PluginCall, outs: list[np.ndarray]) -> list[np.ndarray]:
        if call.node.name != node_name:
            return outs
        bumped = outs[0].copy()
        bumped.flat[bumped.size // 2] += np.asarray(delta).astype(bumped.dtype)
        return [bumped, *outs[1:]]

    return perturb


def test_build_phase_writes_folders_inputs_and_cpu_results(bundle):
    info = json.loads((bundle / "bundle.json").read_text())
    assert set(info["models"]) == {"example", "roialign"}
    assert sorted(info["models"]["roialign"]["plugins"]) == ["pooled_relu", "roi_align"]
    assert len(info["models"]["example"]["plugins"]) == 5
    for name, m in info["models"].items():
        assert m["cpu_stand_in_ok"], name
        manifest = Manifest.load(bundle / name)
        assert find_input_model(bundle / name, manifest).resolve() == (bundle / f"{name}.onnx").resolve()
        rewritten = onnx.load(str(bundle / name / manifest.output_model))
        graph_inputs = [
            i.name for i in rewritten.graph.input if i.name not in {t.name for t in rewritten.graph.initializer}
        ]
        assert sorted(np.load(bundle / f"{name}.npz").files) == sorted(graph_inputs)
        # Plugin nodes and onnxruntime nodes both: a whole-model run needs both executors.
        kinds = {n.name in manifest.nodes for n in rewritten.graph.node}
        assert kinds == {True, False}
    # RoiAlign's input domain reached its graph inputs through the Conv/Relu before it: boxes in image coordinates
    # (16 / 0.25 = 64), x1 <= x2 and y1 <= y2, batch indices in [0, 2).
    z = np.load(bundle / "roialign.npz")
    rois, idx = z["rois"], z["batch_indices"]
    assert (rois[:, 2] >= rois[:, 0]).all() and (rois[:, 3] >= rois[:, 1]).all()
    assert rois.max() > 16 and rois.min() > -7 and set(idx.tolist()) <= {0, 1}


@pytest.mark.parametrize("name", ["example", "roialign"])
def test_cpu_runner_passes_on_the_users_data(bundle, name):
    report = verify_model(bundle / name, bundle / f"{name}.npz", runner=subgraph_runner())
    assert report["ok"] and report["first_divergence"] is None and report["failed_nodes"] == {}
    assert report["reference"] == "onnxruntime"
    assert all(r["ok"] and r["max_abs_err"] <= 1e-5 for r in report["outputs"])
    assert {r["node"] for r in report["plugin_nodes"]} == set(Manifest.load(bundle / name).nodes)


@pytest.mark.parametrize(
    "name, node, output, delta, failing",
    [
        ("roialign", "roi_align", "pooled", 1.0, {"pooled_act"}),  # plugin -> plugin: the first one is named
        ("roialign", "pooled_relu", "pooled_act", 1.0, {"pooled_act"}),
        ("example", "mix_ids", "mixed", 1, {"hashed_f"}),  # downstream: plugin BitwiseNot, then Cast (onnxruntime)
    ],
)
def test_a_perturbed_plugin_is_the_first_diverging_node(bundle, name, node, output, delta, failing):
    report = verify_model(bundle / name, bundle / f"{name}.npz", runner=subgraph_runner(_perturb(node, delta)))
    assert not report["ok"]
    first = report["first_divergence"]
    assert (first["node"], first["output"]) == (node, output)
    assert first["bad"] == 1 and first["max_abs_err"] == pytest.approx(delta, rel=1e-3)
    assert {r["name"] for r in report["outputs"] if not r["ok"]} == failing


def test_a_perturbation_within_tolerance_passes(bundle):
    report = verify_model(
        bundle / "roialign", bundle / "roialign.npz", runner=subgraph_runner(_perturb("roi_align", 1e-7))
    )
    assert report["ok"] and report["first_divergence"] is None


def test_a_failing_plugin_is_a_row_not_an_exception(bundle):
    def runner(call: PluginCall) -> list[np.ndarray]:
        if call.node.name == "roi_align":
            raise RuntimeError("enqueue failed\nsecond line")
        return subgraph_runner()(call)

    report = verify_model(bundle / "roialign", bundle / "roialign.npz", runner=runner)
    assert not report["ok"]
    assert report["first_divergence"]["node"] == "roi_align"
    assert "enqueue failed" in report["failed_nodes"]["roi_align"]
    assert report["failed_nodes"]["pooled_relu"] == "input 'pooled' was not computed"
    (row,) = report["outputs"]
    assert not row["ok"] and "pooled_relu" in row["error"]


def test_a_missing_original_model_is_one_line(bundle, tmp_path):
    moved = tmp_path / "alone"
    shutil.copytree(bundle / "roialign", moved)
    manifest = Manifest.load(moved)
    manifest.input_model = str(tmp_path / "gone.onnx")
    manifest.save(moved)
    with pytest.raises(Exception, match="original model is missing") as e:
        verify_model(moved, bundle / "roialign.npz", runner=subgraph_runner())
    assert "\n" not in str(e.value)


def test_npz_inputs_are_checked(bundle, tmp_path):
    model = onnx.load(str(bundle / "roialign.onnx"))
    z = dict(np.load(bundle / "roialign.npz"))
    assert load_inputs(bundle / "roialign.npz", model).keys() == z.keys()
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{**z, "rois": z["rois"].astype(np.float64)})
    with pytest.raises(UsageError, match="'rois' is float64, the model takes float32"):
        load_inputs(bad, model)
    np.savez(bad, **{k: v for k, v in z.items() if k != "image"}, extra=z["image"])
    with pytest.raises(UsageError, match=r"missing \['image'\]; unknown \['extra'\]"):
        load_inputs(bad, model)
    np.savez(bad, **{**z, "image": z["image"][:, :2]})
    with pytest.raises(UsageError, match="'image' has shape"):
        load_inputs(bad, model)


def test_random_inputs_follow_the_registry_domains():
    """Gather's indices as a graph input: in range (negative ones included); the reference then runs."""
    data = numpy_helper.from_array(np.arange(15, dtype=np.float32).reshape(5, 3), "data")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["data", "idx"], ["g"], name="gather", axis=0),
            helper.make_node("Relu", ["g"], ["y"], name="relu"),
        ],
        "g",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["n", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[data],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = random_inputs(model, np.random.default_rng(0), {"n": [64]})
    idx = feeds["idx"]
    assert idx.shape == (64, 2) and idx.min() >= -5 and idx.max() < 5 and idx.min() < 0
    import onnxruntime as ort

    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_run_phase_command_needs_no_tvm(bundle, tmp_path):
    """What `scripts/verify_model.py run` executes, with TVM unimportable, on a copy of the bundle elsewhere: the
    original model is found relative to the moved folder and every output gets a row (on a machine without a GPU
    the GPU check is waived here, so the plugin nodes run and fail: rows, exit 1). With the check in place, such a
    machine is refused in one line before any run."""
    moved = tmp_path / "gpu_side"
    shutil.copytree(bundle, moved)
    script = _script()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = ["verify", str(moved / "roialign"), "--inputs", str(moved / "roialign.npz"), "--json"]
    waived = "import opforge.runtime.gpu as g; g.require_gpu = lambda command: None; " + script._NO_TVM_CLI
    proc = subprocess.run([sys.executable, "-c", waived, *args], capture_output=True, text=True, env=env)
    assert "Traceback" not in proc.stderr and "tvm" not in proc.stderr.lower(), proc.stderr
    report = json.loads(proc.stdout)
    assert Path(report["original_model"]).resolve() == (moved / "roialign.onnx").resolve()
    assert report["outputs"] and proc.returncode == (0 if report["ok"] else 1)
    proc = subprocess.run([sys.executable, "-c", script._NO_TVM_CLI, *args], capture_output=True, text=True, env=env)
    assert "Traceback" not in proc.stderr and "tvm" not in proc.stderr.lower(), proc.stderr
    if not proc.stdout.strip():  # a machine without a GPU is refused before any run ("no GPU"), in one line
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_failing_reference_is_a_row(bundle, tmp_path):
    """The original model runs in neither onnxruntime nor onnx.reference: each output's row says so."""
    from opforge.verify.reference import ReferenceFailed, reference_outputs

    broken = onnx.load(str(bundle / "roialign.onnx"))
    broken.graph.node[-1].op_type, broken.graph.node[-1].domain = "NoSuchOp", "nowhere"
    broken.opset_import.append(helper.make_opsetid("nowhere", 1))
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    feeds = dict(np.load(bundle / "roialign.npz"))
    report = verify_model(bundle / "roialign", feeds, runner=subgraph_runner(), original=tmp_path / "broken.onnx")
    (row,) = report["outputs"]
    assert not report["ok"] and row["error"].startswith("reference failed: onnxruntime:")
    with pytest.raises(ReferenceFailed, match=r"onnx\.reference"):
        reference_outputs(broken, [feeds[k] for k in ("image", "rois", "batch_indices")])


def test_a_folder_without_plugins_is_one_line(bundle, tmp_path):
    from opforge.core.errors import OpforgeError
    from opforge.verify.plugins import verify_folder

    empty = tmp_path / "empty"
    shutil.copytree(bundle / "roialign", empty)
    manifest = Manifest.load(empty)
    manifest.plugins, manifest.nodes = [], {}
    manifest.save(empty)
    for check in (lambda: verify_model(empty, runner=subgraph_runner()), lambda: verify_folder(empty)):
        with pytest.raises(OpforgeError, match="no plugins") as e:
            check()
        assert "\n" not in str(e.value)
