"""Checking a `generate` output folder's kernel plans alone on the GPU, through the CUDA driver API (no TensorRT
interface, no TVM): every plan against the ONNX reference on fresh random inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from opforge.core.errors import OpforgeError
from opforge.core.kernel_plan import KernelPlan
from opforge.core.manifest import Manifest, PluginEntry
from opforge.runtime.isolated import DEFAULT_TIMEOUT_S, run_isolated
from opforge.verify.check import check_once
from opforge.verify.plugins import default_dims
from opforge.verify.reference import ReferenceFailed


def check_folder(
    out_dir: Path,
    only: set[str] | None = None,
    dim_values: dict[str, list[int]] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[dict]:
    """One row per plugin's plan: its runs at the dimension values default_dims chooses, and whether all passed.
    Plans run in worker processes (opforge.runtime.isolated): one whose kernel faults, whose process crashes or
    that runs past `timeout_s` seconds fails alone, naming why."""
    manifest = Manifest.load(out_dir)
    if not manifest.plugins:
        raise OpforgeError(f"{out_dir}: no plugins in {out_dir / 'manifest.json'}, nothing to check")
    dims_for = default_dims(manifest, dim_values)
    entries = [e for e in manifest.plugins if not only or e.name in only]

    def setup():
        from opforge.runtime.launcher import Context

        return Context(0)

    def work(_ctx, entry: PluginEntry) -> dict:
        from opforge.runtime.launcher import PlanRunner

        plan = KernelPlan.load(out_dir / entry.plan)
        sub = onnx.load(str(out_dir / entry.subgraph))
        runner = PlanRunner(plan, (out_dir / entry.fatbin).read_bytes())
        rng = np.random.default_rng()
        runs = []
        try:
            for d in dims_for(entry, plan):
                try:
                    runs.append(check_once(plan, sub, runner.run_contexts, d, rng))
                except ReferenceFailed as e:  # a row saying so, not a traceback
                    runs.append({"dims": d, "ok": False, "error": str(e)})
        finally:
            runner.close()
        return {"plugin": entry.name, "op_type": entry.op_type, "runs": runs, "ok": all(r["ok"] for r in runs)}

    def fault(entry: PluginEntry, reason: str) -> dict:
        return {"plugin": entry.name, "op_type": entry.op_type, "runs": [], "ok": False, "error": reason}

    return run_isolated(entries, setup, work, fault, timeout_s=timeout_s)
