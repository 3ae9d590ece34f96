"""Tuning a model's nodes: build candidate bundles (CPU, TVM), measure them (GPU, here or on another host),
keep the results in the records file that `generate` reads.

One command when the GPU is local: tune_model(..., measure=True). Across hosts: tune_model(..., measure=False)
writes one bundle per node under OUT (export); `python -m opforge.tune.measure OUT/<node>` on the GPU host
(measure); import_measurements(OUT) back on the CPU host (import).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from opforge.core.schedule import ScheduleConfig
from opforge.tune.candidates import BUNDLE_FILE, build_bundle, bundles_under
from opforge.tune.records import Record, TuningRecords

# (bundle, on_record) -> records; on_record is called as each candidate's result is known
Measurer = Callable[[Path, Callable[[Record], None]], list[Record]]


def _gpu_measurer(bundle: Path, on_record: Callable[[Record], None]) -> list[Record]:
    from opforge.tune.measure import measure_bundle

    return measure_bundle(bundle, progress=on_record)


def tune_subgraph(
    sub,
    node,
    opset: int,
    out: Path,
    dims: dict[str, int],
    records: TuningRecords,
    measurer: Measurer | None = _gpu_measurer,
    configs: list[ScheduleConfig | None] | None = None,
    progress=None,
) -> dict:
    """Build the candidates the records lack; with a measurer, measure them and append each result to the
    records as soon as it is known (a killed run keeps everything measured before the kill)."""
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    info = build_bundle(sub, node, opset, out, dims, records, configs=configs, progress=say)
    cpu_s = time.perf_counter() - t0
    summary = {"node": node.name, "workload": info["workload"], "bundle": str(out), "cpu_s": round(cpu_s, 1)}
    if measurer is None:
        return {**summary, "measured": 0}
    seen = {r.label for r in records.load(info["workload"])}

    def keep(r: Record) -> None:
        if r.label not in seen:
            records.append(r)
            seen.add(r.label)

    t1 = time.perf_counter()
    for r in measurer(out, keep):
        keep(r)  # results the measurer did not report one by one (failures, shared kernels)
    best = records.best(info["workload"])
    return {
        **summary,
        "gpu_s": round(time.perf_counter() - t1, 1),
        "measured": len(info["candidates"]),
        "best": best.label if best else None,
        "best_us": best.us if best else None,
    }


def tune_model(
    model_path: Path,
    out: Path,
    node_names: list[str] | None = None,
    node_types: list[str] | None = None,
    input_shapes: dict | None = None,
    dims: dict[str, int] | None = None,
    records: TuningRecords | None = None,
    measure: bool = True,
    progress=None,
    fuse: bool = True,
) -> list[dict]:
    """Tune the selected nodes at `dims` (the opt shape of a dynamic profile; static models need none). Nodes are
    grouped as `generate` groups them (fuse), so the records apply to the plugins it builds."""
    from opforge.extract.groups import fusion_groups
    from opforge.extract.model_io import load_model, opset_of
    from opforge.extract.select import select_nodes
    from opforge.extract.subgraph import extract_groups

    records = records or TuningRecords.default()
    model = load_model(model_path)
    nodes = select_nodes(model, node_names, node_types)
    groups = fusion_groups(model, nodes) if fuse else [[n] for n in nodes]
    subs = extract_groups(model, groups, input_shapes, dynamic_batch=bool(dims and "batch" in dims))
    rows = []
    for node, sub in zip([g[0] for g in groups], subs):
        bundle = out / re.sub(r"[^0-9A-Za-z_.-]", "_", node.name or sub.key)
        rows.append(
            tune_subgraph(
                sub,
                node,
                opset_of(model),
                bundle,
                dims or {},
                records,
                _gpu_measurer if measure else None,
                progress=progress,
            )
        )
    return rows


def import_measurements(folder: Path, records: TuningRecords | None = None) -> int:
    """Append the measurements of every bundle under `folder` (or of the bundle `folder`) to the records."""
    records = records or TuningRecords.default()
    n = 0
    for bundle in bundles_under(folder):
        m = bundle / "measurements.json"
        if not m.is_file():
            continue
        info = json.loads((bundle / BUNDLE_FILE).read_text())
        have = records.measured(info["workload"])
        for d in json.loads(m.read_text()):
            r = Record(**d)
            if r.workload == info["workload"] and r.label not in have:
                records.append(r)
                have.add(r.label)
                n += 1
    return n
