#!/usr/bin/env python3
"""Kernel plans on the GPU, without TVM: every case of opforge.examples.kernel_cases, at each of its batch sizes,
through the cuda-python launcher, against the ONNX reference on fresh random inputs.

  python scripts/check_kernels.py build .gpu_bundle/kernels      # CPU machine: extract, lower, nvcc
  python scripts/check_kernels.py run .gpu_bundle/kernels OUT    # GPU machine: run, compare, write OUT/kernels-h100.*
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def build(bundle: Path) -> None:
    from opforge.build.package import build_fatbins
    from opforge.core.errors import OpforgeError
    from opforge.examples.kernel_cases import CASES
    from opforge.extract import extract_nodes
    from opforge.plan.planner import plan_subgraphs

    bundle.mkdir(parents=True, exist_ok=True)
    entries = []
    for case in CASES:
        t0 = time.perf_counter()
        model = case.build()
        entry = {"case": case.name, "op_type": case.op_type, "batches": list(case.batches), "tpat": case.tpat}
        try:
            subs = extract_nodes(model, [model.graph.node[0]])
            planned = plan_subgraphs(subs, bundle / case.name)[0]
            build_fatbins(planned.plan_path.parent, [planned.plan_key])
            entry.update(
                plan=str(planned.plan_path.relative_to(bundle)),
                fatbin=str(planned.fatbin_path.relative_to(bundle)),
                subgraph=str(planned.subgraph_path.relative_to(bundle)),
                launches=len(planned.plan.launches),
                workspace=planned.plan.workspace,
            )
        except OpforgeError as e:
            entry["lower_error"] = str(e)
        entry["plan_s"] = round(time.perf_counter() - t0, 2)
        print(f"{case.name:24s} {entry.get('lower_error', 'ok')} ({entry['plan_s']}s)")
        entries.append(entry)
    from opforge.verify.results import bundle_commit

    commit = bundle_commit()
    (bundle / "bundle.json").write_text(json.dumps({"commit": commit, "cases": entries}, indent=1))


def run(bundle: Path, out: Path) -> int:
    from opforge.core.kernel_plan import KernelPlan
    from opforge.plan.planner import load_subgraph
    from opforge.runtime.launcher import Context
    from opforge.verify.check import check_plan_on_gpu
    from opforge.verify.results import run_metadata, write_results

    info = json.loads((bundle / "bundle.json").read_text())
    ctx = Context(0)
    rng = np.random.default_rng()  # fresh inputs every run
    rows = []
    for entry in info["cases"]:
        row = {k: entry[k] for k in ("case", "op_type", "tpat") if k in entry}
        if "lower_error" in entry:
            rows.append({**row, "status": "not-lowered", "reason": entry["lower_error"], "runs": []})
            continue
        plan = KernelPlan.load(bundle / entry["plan"])
        model = load_subgraph(bundle / entry["subgraph"])
        dims_list = [{d.name: b for d in plan.dims} for b in entry["batches"]]
        runs = check_plan_on_gpu(plan, model, (bundle / entry["fatbin"]).read_bytes(), dims_list, rng)
        for b, r in zip(entry["batches"], runs):
            print(
                f"{entry['case']:24s} B={b:<4d} {'PASS' if r['ok'] else 'FAIL'} "
                f"{max((o['max_abs_err'] for o in r.get('outputs', [])), default=float('nan')):.3g}",
                flush=True,
            )
        rows.append(
            {
                **row,
                "status": "pass" if all(r["ok"] for r in runs) else "fail",
                "launches": len(plan.launches),
                "workspace": plan.workspace,
                "dims": [d.name for d in plan.dims],
                "runs": runs,
            }
        )
    meta = run_metadata(
        ctx.name, {"opforge_commit": info["commit"], "executor": "opforge.runtime.launcher (cuda-python)"}
    )
    summary = {
        "cases": len(rows),
        "pass": sum(r["status"] == "pass" for r in rows),
        "fail": sum(r["status"] == "fail" for r in rows),
        "not_lowered": sum(r["status"] == "not-lowered" for r in rows),
        "op_types_passing": len({r["op_type"] for r in rows if r["status"] == "pass"}),
    }
    lines = [
        "| case | op | launches | batch sizes | result | max abs err | max rel err |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] == "not-lowered":
            lines.append(f"| {r['case']} | {r['op_type']} | – | – | not lowered: {r['reason']} | – | – |")
            continue
        errs = [o for run in r["runs"] for o in run.get("outputs", [])]
        lines.append(
            f"| {r['case']}{' (TPAT shape)' if r.get('tpat') else ''} | {r['op_type']} | {r['launches']} | "
            f"{', '.join(str(x['dims']) for x in r['runs'])} | {r['status']} | "
            f"{max((e['max_abs_err'] for e in errs), default=float('nan')):.3g} | "
            f"{max((e['max_rel_err'] for e in errs), default=float('nan')):.3g} |"
        )
    write_results(out, "kernels-h100", meta, rows, summary, "\n".join(lines))
    print(json.dumps(summary))
    return 0 if summary["fail"] == 0 else 1


if __name__ == "__main__":
    from opforge.verify.results import two_phase_main

    sys.exit(two_phase_main(__doc__, build, run))
