#!/usr/bin/env python3
"""opforge's float32 matmul schedule (opforge.lower.matmul_rule) on the GPU, without TVM: the generated cases of
opforge.examples.matmul_cases (MatMul with a dynamic or broadcast batch, Gemm with transposes, alpha, beta and a
broadcast C, Einsum contractions, at extents that divide no tile), each lowered under tuned configurations of the
full tuning space drawn in a seeded order, up to PER_CASE distinct kernels per case, every one run through the
cuda-python launcher at each batch size against the ONNX reference on fresh random inputs under both output
poisons. A kernel the rule declined (a degenerate extent of 1 goes to DLight's other rules) is checked too and
marked.

  python scripts/check_matmul_rule.py build .gpu_bundle/matmul      # CPU machine: generate, lower, nvcc
  python scripts/check_matmul_rule.py run .gpu_bundle/matmul OUT    # GPU machine: OUT/matmul-rule-h100.*
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

SEED = 0
CASES = 18
PER_CASE = 4


def build(bundle: Path) -> None:
    from opforge.build.package import build_fatbins
    from opforge.core.errors import OpforgeError
    from opforge.examples.matmul_cases import matmul_cases
    from opforge.extract import extract_nodes
    from opforge.lower.matmul_rule import carries_register_tile
    from opforge.plan.planner import plan_subgraphs
    from opforge.tune.space import candidates
    from opforge.verify.results import bundle_commit

    bundle.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    configs = [c for c in candidates() if c is not None]
    entries = []
    for case in matmul_cases(SEED, CASES):
        t0 = time.perf_counter()
        (sub,) = extract_nodes(case.model, [case.model.graph.node[0]])
        seen: set[str] = set()
        kept = 0
        for k in rng.permutation(len(configs)):
            if kept == PER_CASE:
                break
            config = configs[int(k)]
            entry = {"case": case.name, "config": config.label, "batches": list(case.batches)}
            folder = bundle / case.name / config.label
            try:
                (planned,) = plan_subgraphs([sub], folder, config_for=lambda s, c=config: c)
            except OpforgeError as e:
                entries.append({**entry, "lower_error": str(e)})
                kept += 1
                continue
            digest = hashlib.sha256(planned.plan.cuda_source.split("__global__", 1)[-1].encode()).hexdigest()
            if digest in seen:
                continue  # the same kernels as a configuration kept before
            seen.add(digest)
            kept += 1
            try:
                build_fatbins(planned.plan_path.parent, [planned.plan_key])
            except OpforgeError as e:  # a kernel nvcc refuses is a result too
                entries.append({**entry, "lower_error": f"nvcc: {e}"})
                continue
            entries.append(
                {
                    **entry,
                    "rule_applied": carries_register_tile(planned.plan.cuda_source, config),
                    "blocks": [list(launch.block) for launch in planned.plan.launches],
                    "plan": str(planned.plan_path.relative_to(bundle)),
                    "fatbin": str(planned.fatbin_path.relative_to(bundle)),
                    "subgraph": str(planned.subgraph_path.relative_to(bundle)),
                }
            )
        print(f"{case.name:40s} {kept} kernels ({time.perf_counter() - t0:.1f}s)", flush=True)
    info = {"commit": bundle_commit(), "seed": SEED, "cases": CASES, "per_case": PER_CASE, "entries": entries}
    (bundle / "bundle.json").write_text(json.dumps(info, indent=1))


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
    for entry in info["entries"]:
        row = {k: entry[k] for k in ("case", "config", "rule_applied", "blocks") if k in entry}
        if "lower_error" in entry:
            rows.append({**row, "status": "not-lowered", "reason": entry["lower_error"], "runs": []})
            continue
        plan = KernelPlan.load(bundle / entry["plan"])
        model = load_subgraph(bundle / entry["subgraph"])
        dims_list = [{d.name: b for d in plan.dims} if b is not None else {} for b in entry["batches"] or [None]]
        runs = check_plan_on_gpu(plan, model, (bundle / entry["fatbin"]).read_bytes(), dims_list, rng)
        ok = all(r["ok"] for r in runs)
        err = max((o["max_abs_err"] for r in runs for o in r.get("outputs", [])), default=float("nan"))
        print(f"{entry['case']:40s} {entry['config']:9s} {'PASS' if ok else 'FAIL'} {err:.3g}", flush=True)
        rows.append({**row, "status": "pass" if ok else "fail", "runs": runs})
    meta = run_metadata(
        ctx.name,
        {
            "opforge_commit": info["commit"],
            "executor": "opforge.runtime.launcher (cuda-python)",
            "seed": info["seed"],
            "per_case": info["per_case"],
        },
    )
    checked = [r for r in rows if r["status"] != "not-lowered"]
    summary = {
        "cases": len({r["case"] for r in rows}),
        "kernels": len(checked),
        "kernels_by_the_rule": sum(bool(r.get("rule_applied")) for r in checked),
        "pass": sum(r["status"] == "pass" for r in checked),
        "fail": sum(r["status"] == "fail" for r in checked),
        "not_lowered": sum(r["status"] == "not-lowered" for r in rows),
    }
    lines = [
        "| case | config | by the rule | blocks | batch sizes | result | max abs err |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] == "not-lowered":
            lines.append(f"| {r['case']} | {r['config']} | – | – | – | not lowered: {r['reason'][:120]} | – |")
            continue
        errs = [o["max_abs_err"] for run in r["runs"] for o in run.get("outputs", [])]
        lines.append(
            f"| {r['case']} | {r['config']} | {'yes' if r['rule_applied'] else 'no'} | "
            f"{' '.join('x'.join(b) for b in r['blocks'])} | "
            f"{', '.join(str(x['dims'] or '-') for x in r['runs'])} | {r['status']} | "
            f"{max(errs, default=float('nan')):.3g} |"
        )
    write_results(out, "matmul-rule-h100", meta, rows, summary, "\n".join(lines))
    print(json.dumps(summary))
    return 0 if summary["fail"] == 0 and summary["not_lowered"] == 0 else 1


if __name__ == "__main__":
    from opforge.verify.results import two_phase_main

    sys.exit(two_phase_main(__doc__, build, run))
