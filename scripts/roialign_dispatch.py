#!/usr/bin/env python3
"""Which RoiAlign kernel to run where: the plane kernel (each map plane in shared memory, one block per plane:
opforge.lower.kernels.roi_align_plane) against a thread per output reading the map through L1/L2
(opforge.lower.kernels.roi_align.roi_align_te), over the four FPN levels of an 800x1088 image (P2 200x272 at
scale 1/4 .. P5 25x34 at 1/32), 256 channels, 1000 boxes of the registry's domain (fractions of the image, so
each level's boxes span as many map pixels as that level's share of the image), 7x7 outputs, for a fixed
sampling ratio of 2 (torchvision's MultiScaleRoIAlign) and the adaptive grid (ratio 0, Detectron2's ROIAlignV2:
ceil(bin size) points per bin on each axis).

Both kernels of a case run on the same inputs through the cuda-python launcher; each is checked against
onnxruntime (both output poisons) and timed (a CUDA graph of back-to-back launches, the median of the replays;
the map may stay in L2 between launches, as it may after the convolution that wrote it).

  python scripts/roialign_dispatch.py build .gpu_bundle/dispatch    # CPU machine: lower both ways, nvcc
  python scripts/roialign_dispatch.py run .gpu_bundle/dispatch OUT  # GPU machine: OUT/roialign-dispatch-h100.*
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

LEVELS = [(200, 272, 0.25), (100, 136, 0.125), (50, 68, 0.0625), (25, 34, 0.03125)]
RATIOS = [2, 0]
CHANNELS, BOXES, POOLED = 256, 1000, 7
KERNELS = ("plane", "per-output")
SEED = 0


def _cases() -> list[dict]:
    return [
        {"name": f"p{k + 2}_{h}x{w}_ratio{ratio}", "map": [1, CHANNELS, h, w], "scale": scale, "ratio": ratio}
        for ratio in RATIOS
        for k, (h, w, scale) in enumerate(LEVELS)
    ]


def _model(case: dict):
    from opforge.bench.wide import roialign_workload

    return roialign_workload(case["map"], BOXES, POOLED, case["scale"], case["ratio"])("float32")


def build(bundle: Path) -> int:
    import onnx

    from opforge.build.package import build_fatbins
    from opforge.core.errors import OpforgeError
    from opforge.extract import extract_nodes
    from opforge.lower.kernels import roi_align_plane
    from opforge.lower.tvm_lower import lower_subgraph
    from opforge.verify.results import bundle_commit

    bundle.mkdir(parents=True, exist_ok=True)
    entries, keys = [], []
    plane_layout = roi_align_plane.layout_for
    for case in _cases():
        model = _model(case)
        onnx.save(model, str(bundle / f"{case['name']}.onnx"))
        (sub,) = extract_nodes(model, [model.graph.node[0]])
        for kernel in KERNELS:
            key = f"{case['name']}_{kernel}"
            if kernel == "per-output":  # the dispatch's other branch: no plane layout
                roi_align_plane.layout_for = lambda *_a, **_k: None
            try:
                plan = lower_subgraph(sub)
            except OpforgeError as e:  # the thread-per-output kernel takes no adaptive grid on the GPU
                entries.append({**case, "kernel": kernel, "key": key, "lower_error": str(e)[:300]})
                continue
            finally:
                roi_align_plane.layout_for = plane_layout
            plan.save(bundle / f"{key}.json")
            (bundle / f"{key}.cu").write_text(plan.cuda_source)
            smem = [int(lc.shared_mem) for lc in plan.launches if lc.shared_mem != "0"]
            entries.append({**case, "kernel": kernel, "key": key, "shared_bytes": max(smem, default=0)})
            keys.append(key)
        print(case["name"], flush=True)
    build_fatbins(bundle, keys)
    (bundle / "dispatch-build.json").write_text(json.dumps({"commit": bundle_commit(), "entries": entries}, indent=1))
    return 0


def run(bundle: Path, out: Path) -> int:
    import onnx

    from opforge.core.kernel_plan import KernelPlan
    from opforge.core.tolerances import for_dtype
    from opforge.runtime.launcher import Context, PlanRunner
    from opforge.verify.check import POISONS
    from opforge.verify.compare import compare
    from opforge.verify.inputs import make_inputs
    from opforge.verify.reference import reference_outputs
    from opforge.verify.results import run_metadata, write_results

    info = json.loads((bundle / "dispatch-build.json").read_text())
    device = Context(0).name
    rows = []
    by_case: dict[str, dict] = {}
    for e in info["entries"]:
        if "lower_error" in e:
            rows.append(
                {
                    "case": e["name"],
                    "kernel": e["kernel"],
                    "sampling_ratio": e["ratio"],
                    "ok": False,
                    "lower_error": e["lower_error"],
                    "us": None,
                }
            )
            continue
        model = onnx.load(str(bundle / f"{e['name']}.onnx"))
        if e["name"] not in by_case:
            shapes = [tuple(e["map"]), (BOXES, 4), (BOXES,)]
            inputs = make_inputs(model, shapes, np.random.default_rng(SEED))
            t0 = time.perf_counter()
            ref = reference_outputs(model, inputs)[0][0]
            by_case[e["name"]] = {"inputs": inputs, "ref": ref, "ref_s": time.perf_counter() - t0}
        inputs, ref = by_case[e["name"]]["inputs"], by_case[e["name"]]["ref"]
        plan = KernelPlan.load(bundle / f"{e['key']}.json")
        runner = PlanRunner(plan, (bundle / f"{e['key']}.fatbin").read_bytes())
        try:
            checks = [compare(runner.run(inputs, p)[0], ref, "float32") for p in POISONS]
            us = runner.time_ms(inputs) * 1000
        finally:
            runner.close()
        row = {
            "case": e["name"],
            "kernel": e["kernel"],
            "sampling_ratio": e["ratio"],
            "map": e["map"],
            "spatial_scale": e["scale"],
            "shared_bytes": e["shared_bytes"],
            "ok": all(c.ok for c in checks),
            "max_abs_err": max(c.max_abs for c in checks),
            "us": round(us, 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    lines = [
        f"Each case: {BOXES} boxes of the registry's domain on one FPN level, {CHANNELS} channels, "
        f"{POOLED}x{POOLED} outputs, fp32; both kernels on the same inputs, checked against onnxruntime "
        f"(tolerance {for_dtype('float32')}) under both poisons.",
        "",
        "| case | sampling ratio | plane µs | per-output µs | plane speedup | pass |",
        "|---|---|---|---|---|---|",
    ]
    lowered = [r for r in rows if "lower_error" not in r]
    summary: dict = {"cases": len(by_case), "all_lowered_pass": all(r["ok"] for r in lowered)}
    for name in by_case:
        plane, per = (next(r for r in rows if r["case"] == name and r["kernel"] == k) for k in KERNELS)
        ratio = plane["sampling_ratio"] or "adaptive"
        if per["us"] is None:  # no thread-per-output kernel to compare with
            ok = "yes" if plane["ok"] else "NO"
            lines.append(f"| {name} | {ratio} | {plane['us']:.1f} | does not lower (see below) | - | {ok} |")
            continue
        speedup = per["us"] / plane["us"]
        summary[f"{name}_plane_speedup"] = round(speedup, 2)
        ok = "yes" if plane["ok"] and per["ok"] else "NO"
        lines.append(f"| {name} | {ratio} | {plane['us']:.1f} | {per['us']:.1f} | {speedup:.2f}x | {ok} |")
    failed = sorted({r["lower_error"] for r in rows if "lower_error" in r})
    if failed:
        lines += ["", "Thread-per-output kernels that do not lower:", ""] + [f"- {why}" for why in failed]
    meta = run_metadata(device, {"opforge_commit": info["commit"]})
    write_results(out, "roialign-dispatch-h100", meta, rows, summary, "\n".join(lines))
    print(json.dumps(summary))
    return 0 if summary["all_lowered_pass"] else 1


if __name__ == "__main__":
    from opforge.verify.results import two_phase_main

    sys.exit(two_phase_main(__doc__, build, run))
