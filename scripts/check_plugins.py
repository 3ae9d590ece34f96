#!/usr/bin/env python3
"""Plugins on the GPU through the IPluginV3 harness (TensorRT's call sequence, two execution contexts on two streams)
against the ONNX reference on fresh random inputs.

Every lowerable case of opforge.examples.kernel_cases goes into one model and one plugin library, twice: with the
batch symbolic (run at each case's batch sizes) and with it fixed (static shapes); plus the built-in example model.

  python scripts/check_plugins.py build .gpu_bundle/plugins      # CPU machine: generate + build everything
  python scripts/check_plugins.py run .gpu_bundle/plugins OUT    # GPU machine: verify, write OUT/plugins-h100.*
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

NOT_LOWERABLE = {"nonzero"}  # data-dependent output shape: no plan (see results/kernels-h100.md)
OPSET = 20


def build(bundle: Path) -> None:
    import onnx

    from opforge.examples.example_model import REJECTED_OP_TYPES, example_model
    from opforge.examples.kernel_cases import CASES
    from opforge.examples.merge import merge_models
    from opforge.generate import DynamicBatch, generate

    cases = [c for c in CASES if c.name not in NOT_LOWERABLE]
    models = {c.name: c.build() for c in cases}
    variants = {
        "dynamic": merge_models(models, OPSET, name="cases_dynamic"),
        "static": merge_models(models, OPSET, {c.name: {"B": c.batches[0]} for c in cases}, name="cases_static"),
    }
    info = {"cases": {c.name: {"batches": list(c.batches), "op_type": c.op_type} for c in cases}, "variants": {}}
    for name, model in variants.items():
        src = bundle / f"{name}.onnx"
        src.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(src))
        t0 = time.perf_counter()
        generate(src, bundle / name, node_names=[n.name for n in model.graph.node], progress=print)
        info["variants"][name] = {"generate_s": round(time.perf_counter() - t0, 1)}
    ex = bundle / "example.onnx"
    onnx.save(example_model(), str(ex))
    t0 = time.perf_counter()
    generate(ex, bundle / "example", node_types=list(REJECTED_OP_TYPES), dynamic_batch=DynamicBatch(1, 7, 64))
    info["variants"]["example"] = {"generate_s": round(time.perf_counter() - t0, 1)}
    from opforge.verify.results import bundle_commit

    info["commit"] = bundle_commit()
    (bundle / "bundle.json").write_text(json.dumps(info, indent=1))


def run(bundle: Path, out: Path) -> int:
    from opforge.core.manifest import Manifest
    from opforge.runtime.launcher import Context
    from opforge.verify.plugins import default_dims, verify_folder
    from opforge.verify.results import run_metadata, write_results

    info = json.loads((bundle / "bundle.json").read_text())
    device = Context(0).name
    rows = []
    for variant in ("dynamic", "static", "example"):
        folder = bundle / variant
        fallback = default_dims(Manifest.load(folder))

        def dims_for(entry, plan, variant=variant, fallback=fallback) -> list[dict[str, int]]:
            if variant == "dynamic":
                case = entry.nodes[0].split("__")[0]
                return [{d.name: b for d in plan.dims} for b in info["cases"][case]["batches"]]
            return fallback(entry, plan)

        def show(row: dict, variant=variant) -> None:
            print(
                f"{variant:8s} {row['plugin']:34s} {'PASS' if row['ok'] else 'FAIL'} "
                f"{[r['dims'] for r in row['runs']]} {[r.get('error', '') for r in row['runs']]}",
                flush=True,
            )

        for row in verify_folder(folder, dims_for, on_row=show):
            rows.append({"variant": variant, "case": row["nodes"][0].split("__")[0], **row})
    meta = run_metadata(
        device,
        {
            "opforge_commit": info["commit"],
            "executor": "opforge harness (IPluginV3 call sequence, 2 contexts x 2 poisons)",
        },
    )
    summary = {
        "plugins": len(rows),
        "pass": sum(r["ok"] for r in rows),
        "fail": sum(not r["ok"] for r in rows),
        "op_types_passing": len({r["op_type"] for r in rows if r["ok"]}),
        "runs": sum(len(r["runs"]) for r in rows),
    }
    lines = ["| variant | plugin | op | shapes run (dims) | result | max abs err |", "|---|---|---|---|---|---|"]
    for r in rows:
        errs = [o["max_abs_err"] for run in r["runs"] for o in run.get("outputs", [])]
        dims = "; ".join(str(run["dims"]) for run in r["runs"]) or "static"
        lines.append(
            f"| {r['variant']} | {r['plugin']} | {r['op_type']} | {dims} | {'pass' if r['ok'] else 'FAIL'} | "
            f"{max(errs, default=float('nan')):.3g} |"
        )
    write_results(out, "plugins-h100", meta, rows, summary, "\n".join(lines))
    print(json.dumps(summary))
    return 0 if summary["fail"] == 0 else 1


if __name__ == "__main__":
    from opforge.verify.results import two_phase_main

    sys.exit(two_phase_main(__doc__, build, run))
