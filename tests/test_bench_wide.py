"""The wide benchmark's workloads and its inputs (opforge.bench.wide), on the CPU: the GPU half is
scripts/bench_wide.py run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from opforge.bench import wide


def test_every_workload_is_a_valid_static_model():
    for w in wide.workloads():
        model = w.model()
        onnx.checker.check_model(model, full_check=True)
        assert wide.moved_bytes(model) > 0, w.name


def test_weights_get_the_workloads_values():
    """MatMulInteger's B and its zero point stay run-time inputs of the plugin subgraph; drawn at random, the
    reference computed another product than the PyTorch contenders (which hold the workload's constants), and both
    were marked as differing from ONNX."""
    import onnxruntime as ort

    from opforge.extract.groups import fusion_groups
    from opforge.extract.subgraph import extract_groups

    model = wide._matmul_integer((8, 16), (16, 4))(wide.U8)
    (sub,) = extract_groups(model, fusion_groups(model, list(model.graph.node)))
    assert len(sub.model.graph.input) > 2  # the zero point is a subgraph input
    inputs, by_name = wide.workload_inputs(model, sub.model, np.random.default_rng(3))

    def run(m, feeds):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]

    got = run(sub.model, {vi.name: a for vi, a in zip(sub.model.graph.input, inputs)})
    want = run(model, {n: by_name[n] for n in ("a", "b")})
    np.testing.assert_array_equal(got, want)


def test_a_workload_without_a_subgraph_draws_its_own_inputs():
    model = wide._matmul_integer((8, 16), (16, 4))(wide.U8)
    inputs, by_name = wide.workload_inputs(model, model, np.random.default_rng(3))
    assert [a.shape for a in inputs] == [(8, 16), (16, 4)] and set(by_name) == {"a", "b"}


def _roi_model(mode: str) -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    node = helper.make_node(
        "RoiAlign",
        ["x", "rois", "idx"],
        ["y"],
        output_height=3,
        output_width=4,
        sampling_ratio=2,
        spatial_scale=0.5,
        coordinate_transformation_mode=mode,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [
            vi("x", TensorProto.FLOAT, [1, 5, 20, 30]),
            vi("rois", TensorProto.FLOAT, [6, 4]),
            vi("idx", TensorProto.INT64, [6]),
        ],
        [vi("y", TensorProto.FLOAT, [6, 5, 3, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])


@pytest.mark.parametrize("mode", ["half_pixel", "output_half_pixel"])
def test_sampled_bytes_counts_the_distinct_corner_pixels_of_each_box(mode):
    rng = np.random.default_rng(11)
    x1, y1 = rng.uniform(-6, 60, 6), rng.uniform(-4, 40, 6)
    rois = np.stack([x1, y1, x1 + rng.uniform(0.2, 40, 6), y1 + rng.uniform(0.2, 30, 6)], axis=1).astype(np.float32)
    offset = 0.5 if mode == "half_pixel" else 0.0
    expected = 0
    for bx1, by1, bx2, by2 in rois.astype(np.float64) * 0.5 - offset:
        w, h = bx2 - bx1, by2 - by1
        if offset == 0.0:
            w, h = max(w, 1.0), max(h, 1.0)
        pixels = set()
        for ph in range(3):
            for iy in range(2):
                y = by1 + ph * h / 3 + (iy + 0.5) * (h / 3) / 2
                for pw in range(4):
                    for ix in range(2):
                        x = bx1 + pw * w / 4 + (ix + 0.5) * (w / 4) / 2
                        if y < -1 or y > 20 or x < -1 or x > 30:
                            continue  # ONNX's definition reads nothing there
                        yl, xl = int(min(max(y, 0), 19)), int(min(max(x, 0), 29))
                        pixels |= {(a, b) for a in (yl, min(yl + 1, 19)) for b in (xl, min(xl + 1, 29))}
        expected += len(pixels) * 5 * 4
    # sampling points form a grid (every y with every x), so the pixels read are its corner rows x corner columns,
    # some boxes here reaching past the map's edge
    assert wide.sampled_bytes(_roi_model(mode), {"rois": rois}) == expected


def test_report_takes_each_workloads_latest_run(tmp_path):
    """Parts of several GPU runs make one report: a workload run again later (after its kernel changed) keeps only
    its latest row, and the report names every build commit the rows come from."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_wide_script", Path(__file__).parents[1] / "scripts/bench_wide.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = json.loads((Path(__file__).parents[1] / "results/bench-wide-h100.json").read_text())["rows"][:3]
    keep = ("roofline_us", "moved_MB", "opforge_tuned_us", "eager_us", "compile_us", "tuning_total_s")
    raw = [{k: v for k, v in r.items() if not k.startswith("tuned_")} for r in rows]
    assert all(k in r for r in raw for k in keep)
    again = dict(raw[1], opforge_tuned_us=raw[1]["opforge_tuned_us"] / 2)
    parts = tmp_path / "parts"
    parts.mkdir()
    for name, date, commit, part_rows in (
        ("b", "2026-01-02 00:00:00", "new", [again]),
        ("a", "2026-01-01 00:00:00", "old", raw),
    ):
        meta = {"device": "GPU", "date_utc": date, "command": "run", "opforge_commit": commit}
        (parts / f"bench-wide-part-{name}.json").write_text(json.dumps({"meta": meta, "rows": part_rows}))
    assert script.report(parts, tmp_path) == 0
    out = json.loads((tmp_path / "bench-wide-h100.json").read_text())
    by = {r["workload"]: r for r in out["rows"]}
    assert len(out["rows"]) == 3 and by[raw[1]["workload"]]["opforge_tuned_us"] == again["opforge_tuned_us"]
    assert by[raw[0]["workload"]]["opforge_tuned_us"] == raw[0]["opforge_tuned_us"]
    assert out["meta"]["opforge_commit"] == "old, new"
