"""Tuning on the CPU side: the candidate space builds into one plugin library, records survive kill -9 and are
reused by the next run, and `generate` builds the recorded winner. (GPU measurement: scripts/bench.py.)"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from opforge.core.schedule import ScheduleConfig, label
from opforge.tune.records import Record, TuningRecords
from opforge.tune.space import candidates

CONFIGS = [
    None,
    ScheduleConfig(128, 1, "strided"),
    ScheduleConfig(256, 2, "strided"),
    ScheduleConfig(512, 4, "contiguous"),
    ScheduleConfig(1024, 8, "strided"),
]


def fake_us(lbl: str) -> float:
    """A deterministic stand-in for a GPU measurement."""
    return 10.0 + sum(map(ord, lbl)) % 17


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_tune import CONFIGS, fake_us, model_and_sub
    from opforge.tune.records import Record, TuningRecords
    from opforge.tune.tuner import tune_subgraph

    def slow(bundle, on_record):
        info = json.loads((bundle / "tune.json").read_text())
        for e in info["candidates"]:
            if "plugin" in e:
                on_record(Record(info["workload"], e["label"], e["config"], ok=True, us=fake_us(e["label"]),
                                 poisons=2))
                time.sleep(1.0)
        return []

    model, sub = model_and_sub()
    tune_subgraph(sub, model.graph.node[0], 18, Path({bundle!r}), {{}}, TuningRecords(Path({records!r})), slow,
                  configs=CONFIGS)
    """
)


def model_and_sub():
    from opforge.examples.onnx_build import single_node_model
    from opforge.extract.subgraph import extract_nodes

    model = single_node_model(
        "Resize",
        [("x", "float32", [2, 3, 5, 7])],
        consts={"scales": __import__("numpy").array([1, 1, 2, 3], "float32")},
        order=["x", "", "scales"],
        attrs={"mode": "nearest"},
    )
    return model, extract_nodes(model, [model.graph.node[0]])[0]


def test_space_is_the_default_plus_28():
    space = candidates()
    assert space[0] is None and len(space) == 29 and len({label(c) for c in space}) == 29


def test_torn_record_line_is_skipped_and_closed(tmp_path):
    recs = TuningRecords(tmp_path / "r.jsonl")
    recs.append(Record("w", "a", None, ok=True, us=3.0, poisons=2))
    with open(recs.path, "a") as f:
        f.write('{"workload": "w", "label": "b", "con')  # a write cut by kill -9
    recs.append(Record("w", "c", {"threads": 128, "per_thread": 2, "layout": "strided"}, ok=True, us=2.0, poisons=2))
    assert [r.label for r in recs.load()] == ["a", "c"]
    assert recs.config_for("w") == ScheduleConfig(128, 2, "strided")
    # a candidate checked under one poison only never wins
    recs.append(Record("w", "d", {"threads": 256, "per_thread": 1, "layout": "strided"}, ok=True, us=1.0, poisons=1))
    assert recs.best("w").label == "c"


def test_kill_9_then_resume_measures_only_the_rest(tmp_path):
    records_path = tmp_path / "records.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    code = CHILD.format(tests=str(Path(__file__).parent), bundle=str(tmp_path / "b1"), records=str(records_path))
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.time() + 240
    while time.time() < deadline and child.poll() is None:
        if records_path.is_file() and len(TuningRecords(records_path).load()) >= 2:
            break
        time.sleep(0.2)
    assert child.poll() is None, "the tuning run ended before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    first = {r.label for r in TuningRecords(records_path).load()}
    assert 2 <= len(first) < len(CONFIGS)

    from opforge.tune.tuner import tune_subgraph

    measured_now = []

    def fast(bundle, on_record):
        info = json.loads((bundle / "tune.json").read_text())
        assert set(info["already_measured"]) == first
        out = []
        for e in info["candidates"]:
            measured_now.append(e["label"])
            out.append(Record(info["workload"], e["label"], e["config"], ok=True, us=fake_us(e["label"]), poisons=2))
        return out

    model, sub = model_and_sub()
    summary = tune_subgraph(
        sub, model.graph.node[0], 18, tmp_path / "b2", {}, TuningRecords(records_path), fast, configs=CONFIGS
    )
    assert set(measured_now).isdisjoint(first)
    assert set(measured_now) | first == {label(c) for c in CONFIGS}
    assert summary["best"] == min((label(c) for c in CONFIGS), key=fake_us)


def test_candidate_bundle_builds_one_library(tmp_path):
    from opforge.tune.candidates import build_bundle

    model, sub = model_and_sub()
    info = build_bundle(sub, model.graph.node[0], 18, tmp_path / "b", {}, configs=CONFIGS)
    built = [c for c in info["candidates"] if "plugin" in c]
    assert built and all((tmp_path / "b" / c["library"]).is_file() for c in built)
    assert len({c["plugin"] for c in built}) == len(built)  # distinct plugins (distinct kernel symbols)
    assert all("plugin" in c or "same_as" in c or "error" in c for c in info["candidates"])


def test_generate_builds_the_recorded_winner(tmp_path):
    from opforge.core.fsutil import atomic_write_bytes
    from opforge.examples.onnx_build import single_node_model  # noqa: F401
    from opforge.extract.subgraph import extract_nodes
    from opforge.generate import generate
    from opforge.tune.records import workload_key

    model, sub = model_and_sub()
    path = tmp_path / "m.onnx"
    atomic_write_bytes(path, model.SerializeToString())
    sub = extract_nodes(model, [model.graph.node[0]])[0]
    records = TuningRecords(tmp_path / "records.jsonl")
    records.append(
        Record(
            workload_key(sub.key, "sm_90"),
            "t128x2s",
            ScheduleConfig(128, 2, "strided").to_dict(),
            ok=True,
            us=1.0,
            poisons=2,
        )
    )
    result = generate(path, tmp_path / "out", node_types=["Resize"], tuning_records=records)
    assert result.plugins[0].plan.producer.endswith("opforge-tuned t128x2s")
    assert "128" in result.plugins[0].plan.launches[0].block[0]


def test_records_of_an_older_lowering_are_not_reused(tmp_path, monkeypatch):
    """A record measured the plan an older lowering made under that label: after the lowering changes
    (LOWERING_REVISION), the workload is measured again instead of reusing the old winner."""
    from opforge.tune import records as records_module

    records = TuningRecords(tmp_path / "records.jsonl")
    old = records_module.workload_key("abc", "sm_90")
    records.append(Record(old, "t128x2s", ScheduleConfig(128, 2, "strided").to_dict(), ok=True, us=1.0, poisons=2))
    assert records.config_for(old) == ScheduleConfig(128, 2, "strided")
    monkeypatch.setattr(records_module, "LOWERING_REVISION", records_module.LOWERING_REVISION + 1)
    new = records_module.workload_key("abc", "sm_90")
    assert new != old and records.measured(new) == set() and records.config_for(new) is None


def test_cached_plans_of_an_edited_lowering_are_not_reused(tmp_path, monkeypatch):
    """The plan cache's key follows the lowering's source (opforge.lower and opforge.ops), not only
    LOWERING_REVISION: an edit that was not accompanied by a bump still gets fresh plans."""
    import shutil

    from onnx import TensorProto, helper

    import opforge
    from opforge.extract.subgraph import NodeSubgraph
    from opforge.lower.target import CudaTarget
    from opforge.plan import planner

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="n")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    sub = NodeSubgraph("n", "Relu", helper.make_model(g), ["x"], {}, ["y"])
    before = planner._cache_key(sub, CudaTarget())
    # The same digest over a copy of the package with one lowering file edited.
    root = Path(opforge.__file__).parent
    copy = tmp_path / "opforge"
    shutil.copytree(root / "lower", copy / "lower")
    shutil.copytree(root / "ops", copy / "ops")
    (copy / "plan").mkdir()
    monkeypatch.setattr(planner, "__file__", str(copy / "plan" / "planner.py"))
    try:
        planner.lowering_digest.cache_clear()
        assert planner._cache_key(sub, CudaTarget()) == before
        kernel = copy / "lower" / "kernels" / "roi_align_plane.py"
        kernel.write_text(kernel.read_text() + "\n# edited\n")
        planner.lowering_digest.cache_clear()
        assert planner._cache_key(sub, CudaTarget()) != before
    finally:
        planner.lowering_digest.cache_clear()


@pytest.mark.parametrize("argv", [["tune", "--measure", "/nonexistent/bundle"], ["tune", "model.onnx"]])
def test_tune_cli_bad_input(argv, capsys):
    from opforge.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("opforge: error:")


def test_slow_candidates_are_timed_within_the_budget():
    """Fast kernels get the full 20 calls x 50 replays; slow ones fewer, so one candidate costs ~2 s at most."""
    from opforge.tune.measure import CALLS_PER_GRAPH, REPLAYS, TIMING_BUDGET_US, _timing_shape

    assert _timing_shape(3.0) == (CALLS_PER_GRAPH, REPLAYS)
    for us in (900.0, 40_000.0, 250_000.0):
        calls, replays = _timing_shape(us)
        assert calls * replays * us <= TIMING_BUDGET_US and replays >= 5
    assert _timing_shape(5e6) == (1, 5)  # never fewer than 5 samples
