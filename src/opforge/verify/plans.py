"""Checking a `generate` output folder's kernel plans alone on the GPU, through the CUDA driver API (no TensorRT
interface, no TVM): every plan against the ONNX reference on fresh random inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from opforge.core.errors import OpforgeError
from opforge.core.kernel_plan import KernelPlan
from opforge.core.manifest import Manifest
from opforge.verify.check import check_once
from opforge.verify.plugins import default_dims
from opforge.verify.reference import ReferenceFailed


def check_folder(
    out_dir: Path, only: set[str] | None = None, dim_values: dict[str, list[int]] | None = None
) -> list[dict]:
    """One row per plugin's plan: its runs at the dimension values default_dims chooses, and whether all passed."""
    from opforge.runtime.launcher import Context, PlanRunner

    manifest = Manifest.load(out_dir)
    if not manifest.plugins:
        raise OpforgeError(f"{out_dir}: no plugins in {out_dir / 'manifest.json'}, nothing to check")
    dims_for = default_dims(manifest, dim_values)
    Context(0)
    rng = np.random.default_rng()
    rows = []
    for entry in manifest.plugins:
        if only and entry.name not in only:
            continue
        plan = KernelPlan.load(out_dir / entry.plan)
        sub = onnx.load(str(out_dir / entry.subgraph))
        runner = PlanRunner(plan, (out_dir / entry.fatbin).read_bytes())
        runs = []
        try:
            for d in dims_for(entry, plan):
                try:
                    runs.append(check_once(plan, sub, runner.run_contexts, d, rng))
                except ReferenceFailed as e:  # a row saying so, not a traceback
                    runs.append({"dims": d, "ok": False, "error": str(e)})
        finally:
            runner.close()
        rows.append({"plugin": entry.name, "op_type": entry.op_type, "runs": runs, "ok": all(r["ok"] for r in runs)})
    return rows
