"""Verifying a `generate` output folder on the GPU: every plugin through the harness (TensorRT's call sequence,
two execution contexts) against the ONNX reference on fresh random inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from opforge.core.errors import OpforgeError
from opforge.core.fields import parser_fields
from opforge.core.kernel_plan import KernelPlan
from opforge.core.manifest import Manifest, PluginEntry
from opforge.runtime.isolated import DEFAULT_TIMEOUT_S, run_isolated
from opforge.verify.check import check_once
from opforge.verify.harness import Harness, HarnessError
from opforge.verify.reference import ReferenceFailed

DimsFor = Callable[[PluginEntry, KernelPlan], list[dict[str, int]]]


def default_dims(manifest: Manifest, values: dict[str, list[int]] | None = None) -> DimsFor:
    """Dimension values to verify at: given ones, else the dynamic-batch profile for `batch`, else 1 and 7."""
    profile = manifest.dynamic_batch or {}
    given = values or {}

    def dims_for(entry: PluginEntry, plan: KernelPlan) -> list[dict[str, int]]:
        choices = []
        for d in plan.dims:
            if d.name in given:
                choices.append(given[d.name])
            elif d.name == "batch" and profile:
                choices.append(sorted({profile["min"], profile["opt"], profile["max"]}))
            else:
                choices.append([1, 7])
        runs = max((len(c) for c in choices), default=1)
        return [{d.name: c[min(k, len(c) - 1)] for d, c in zip(plan.dims, choices)} for k in range(runs)]

    return dims_for


def verify_folder(
    out_dir: Path,
    dims_for: DimsFor | None = None,
    only: set[str] | None = None,
    on_row: Callable[[dict], None] | None = None,
    dim_values: dict[str, list[int]] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[dict]:
    """dims_for chooses the dimension values per plugin; by default default_dims(manifest, dim_values). Plugins
    run in worker processes (opforge.runtime.isolated): one whose kernel faults (its CUDA context is then dead),
    whose process crashes or that runs past `timeout_s` seconds fails alone, naming why; the others are checked in
    a fresh process."""
    manifest = Manifest.load(out_dir)
    if not manifest.plugins:
        raise OpforgeError(f"{out_dir}: no plugins in {out_dir / 'manifest.json'}, nothing to verify")
    dims_for = dims_for or default_dims(manifest, dim_values)
    rewritten = onnx.load(str(out_dir / manifest.output_model))
    nodes = {n.name: n for n in rewritten.graph.node}
    entries = [e for e in manifest.plugins if not only or e.name in only]

    def setup() -> Harness:
        return Harness(out_dir / manifest.harness)

    def work(harness: Harness, entry: PluginEntry) -> dict:
        plan = KernelPlan.load(out_dir / entry.plan)
        sub = onnx.load(str(out_dir / entry.subgraph))
        lib = out_dir / entry.library
        row = _row(entry)
        try:
            declared = harness.declared_fields(lib, entry.name)
            fields = parser_fields(nodes[entry.nodes[0]], declared)
            row["fields"] = [f[0] for f in fields]
        except HarnessError as e:
            return {**row, "ok": False, "error": str(e)}
        rng = np.random.default_rng()

        def run(inputs: list[np.ndarray], poison: int) -> list[list[np.ndarray]]:
            return harness.run_plan(lib, entry.name, fields, plan, inputs, poison)

        for dims in dims_for(entry, plan):
            try:
                r = check_once(plan, sub, run, dims, rng)
            except (HarnessError, ValueError, ReferenceFailed) as e:
                r = {"dims": dims, "ok": False, "error": str(e)}
            row["runs"].append(r)
        row["ok"] = bool(row["runs"]) and all(r["ok"] for r in row["runs"])
        return row

    def fault(entry: PluginEntry, reason: str) -> dict:
        return {**_row(entry), "ok": False, "error": reason}

    report = (lambda _entry, row: on_row(row)) if on_row else None
    return run_isolated(entries, setup, work, fault, timeout_s=timeout_s, progress=report)


def _row(entry: PluginEntry) -> dict:
    return {"plugin": entry.name, "op_type": entry.op_type, "nodes": entry.nodes, "runs": []}
