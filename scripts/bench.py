#!/usr/bin/env python3
"""Speed benchmark on TPAT's published cases (opforge.bench.suite), fp32 and fp16.

Contenders, all timed the same way in the same run: many back-to-back calls captured in one CUDA graph, the graph
replayed 50 times with CUDA events, a 256 MiB L2 flush before each replay (outside the timed region), median:
  opforge untuned (DLight defaults) and opforge tuned (the fastest candidate of the tuning space that passed the
  harness check under both poisons), both as plugins through the IPluginV3 harness's enqueue;
  PyTorch eager implementing the same ONNX semantics; torch.compile(mode="max-autotune-no-cudagraphs") of it;
  the roofline (bytes the op must move / measured device-to-device bandwidth) and an empty kernel (the floor).
The tuning itself (CPU build of every candidate, GPU measurement) is timed per op.

python scripts/bench.py build BUNDLE [--dtypes float32,float16]   # CPU + TVM: candidates of every case
python scripts/bench.py run BUNDLE OUT [--dtypes float32]         # GPU: tune-measure, torch, roofline
python scripts/bench.py report OUT RESULTS_DIR                    # merge run parts, write bench-h100.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def build(bundle: Path, dtype_names: list[str]) -> None:
    from opforge.bench.suite import cases
    from opforge.extract.model_io import opset_of
    from opforge.extract.subgraph import extract_nodes
    from opforge.tune.candidates import build_bundle
    from opforge.verify.results import bundle_commit

    bundle.mkdir(parents=True, exist_ok=True)
    info = {"commit": bundle_commit(), "cases": {}}
    for case in cases(tuple(dtype_names)):
        model = case.model()
        node = model.graph.node[0]
        sub = extract_nodes(model, [node])[0]
        twin = case.reference_model() if case.dtype != "float32" else None
        t0 = time.perf_counter()
        b = build_bundle(sub, node, opset_of(model), bundle / case.name, {}, reference_model=twin)
        cpu_s = time.perf_counter() - t0
        info["cases"][case.name] = {"cpu_s": round(cpu_s, 1), "candidates": len(b["candidates"])}
        print(f"{case.name}: {len(b['candidates'])} candidates, {cpu_s:.1f}s", flush=True)
        (bundle / "bench-build.json").write_text(json.dumps(info, indent=1))  # after each case: resumable


# -- GPU side ---------------------------------------------------------------------------------------------------------
def run(bundle: Path, out: Path, dtype_names: list[str], only: str = "") -> int:
    import numpy as np
    import onnx
    import torch

    from opforge.bench.suite import cases
    from opforge.bench.timing import d2d_bandwidth, empty_kernel_us, torch_contenders
    from opforge.runtime.launcher import Context
    from opforge.tune.measure import measure_bundle, reference
    from opforge.tune.records import TuningRecords
    from opforge.verify.compare import compare
    from opforge.verify.inputs import make_inputs
    from opforge.verify.results import run_metadata

    device = Context(0).name
    built = json.loads((bundle / "bench-build.json").read_text())
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    bandwidth = d2d_bandwidth(torch)
    empty_us = empty_kernel_us(torch, flush)
    print(f"{device}: D2D {bandwidth / 1e12:.2f} TB/s, empty kernel {empty_us:.2f} µs", flush=True)
    rows = []
    for case in cases(tuple(dtype_names)):
        if only and only not in case.name:
            continue
        d = bundle / case.name
        t0 = time.perf_counter()
        recs = measure_bundle(d, isolate=False, device=device)  # this process runs torch on the GPU
        gpu_s = time.perf_counter() - t0
        store = TuningRecords(out / f"records-{case.name}.jsonl")
        for r in recs:
            store.append(r)
        best = store.best(recs[0].workload) if recs else None
        untuned = next((r for r in recs if r.label == "dlight-default"), None)
        model = onnx.load(str(d / "subgraph.onnx"))
        inputs = make_inputs(
            model,
            [tuple(int(x.dim_value) for x in vi.type.tensor_type.shape.dim) for vi in model.graph.input],
            np.random.default_rng(),
        )
        out_dtype = onnx.helper.tensor_dtype_to_np_dtype(model.graph.output[0].type.tensor_type.elem_type)
        ref = reference(d, model, inputs, [np.dtype(out_dtype).name])[0]
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).cuda() for a in inputs]
        row = {
            "case": case.name,
            "dtype": case.dtype,
            "moved_MB": round(case.moved_bytes / 1e6, 3),
            "roofline_us": case.moved_bytes / bandwidth * 1e6,
            "empty_kernel_us": empty_us,
            "opforge_untuned_us": untuned.us if untuned and untuned.ok else None,
            "opforge_tuned_us": best.us if best else None,
            "tuned_config": best.label if best else None,
            "tuning_cpu_s": built["cases"].get(case.name, {}).get("cpu_s"),
            "tuning_gpu_s": round(gpu_s, 1),
            "candidates": len(recs),
            "candidates_ok": sum(r.ok for r in recs),
        }
        fn = case.torch_fn(torch, tensors, case.dtype)

        def matches(out, ref=ref, dtype=case.dtype):
            return compare(out.float().cpu().numpy().astype(ref.dtype), ref, dtype)

        row.update(torch_contenders(torch, fn, tensors, matches, flush))
        rows.append(row)
        print(json.dumps(row), flush=True)
        # after each case, so a run cut short still returns what it measured
        meta = run_metadata(device, {"opforge_commit": built.get("commit", "?"), "d2d_TBps": bandwidth / 1e12})
        part = "-".join(dtype_names) + (f"-{only}" if only else "")
        (out / f"bench-part-{part}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


# -- report ---------------------------------------------------------------------------------------------------------
def report(parts_dir: Path, results: Path) -> int:
    from opforge.bench.timing import geomean
    from opforge.verify.results import run_metadata, write_results

    parts = [json.loads(p.read_text()) for p in sorted(parts_dir.glob("bench-part-*.json"))]
    rows = [r for p in parts for r in p["rows"]]
    # The report's own command and date; the GPU runs it merges, each with its command and date.
    meta = run_metadata(
        parts[0]["meta"]["device"],
        {
            "opforge_commit": parts[0]["meta"].get("opforge_commit", "?"),
            "gpu_runs": [f"{p['meta']['date_utc']} UTC: {p['meta']['command']}" for p in parts],
        },
    )
    for r in rows:
        t = r["opforge_tuned_us"]
        r["tuned_vs_eager"] = r["eager_us"] / t if t and r.get("eager_us") else None
        r["tuned_vs_compile"] = r["compile_us"] / t if t and r.get("compile_us") else None
        r["tuned_vs_untuned"] = r["opforge_untuned_us"] / t if t and r.get("opforge_untuned_us") else None
        r["tuned_pct_roofline"] = 100 * r["roofline_us"] / t if t else None
        r["compile_pct_roofline"] = 100 * r["roofline_us"] / r["compile_us"] if r.get("compile_us") else None
        r["tuning_total_s"] = (r["tuning_cpu_s"] or 0) + (r["tuning_gpu_s"] or 0)
    big = [r for r in rows if r["moved_MB"] >= 50]
    summary = {
        "cases": len(rows),
        "geomean_tuned_vs_eager": round(geomean([r["tuned_vs_eager"] for r in rows]) or 0, 3),
        "geomean_tuned_vs_compile": round(geomean([r["tuned_vs_compile"] for r in rows]) or 0, 3),
        "geomean_tuned_vs_untuned": round(geomean([r["tuned_vs_untuned"] for r in rows]) or 0, 3),
        "cases_over_50MB": len(big),
        "cases_over_50MB_at_80pct_roofline": sum((r["tuned_pct_roofline"] or 0) >= 80 for r in big),
        "max_tuning_s_per_op": max(r["tuning_total_s"] for r in rows),
    }

    def f(x, nd=1):
        return "-" if x is None else f"{x:.{nd}f}"

    lines = [
        "µs per call (median of 50 CUDA-graph replays of 20 back-to-back calls, L2 flushed before each replay).",
        "",
        "| case | MB moved | roofline | empty kernel | opforge untuned | opforge tuned (config) | eager | "
        "torch.compile | tuned vs eager | tuned vs compile | tuned % roofline | tuning s (CPU+GPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['moved_MB']:.1f} | {f(r['roofline_us'])} | {f(r['empty_kernel_us'], 2)} | "
            f"{f(r['opforge_untuned_us'])} | {f(r['opforge_tuned_us'])} ({r['tuned_config']}) | {f(r['eager_us'])} | "
            f"{f(r['compile_us'])} | {f(r['tuned_vs_eager'], 2)}x | {f(r['tuned_vs_compile'], 2)}x | "
            f"{f(r['tuned_pct_roofline'], 0)}% | {r['tuning_cpu_s']}+{r['tuning_gpu_s']} |"
        )
    mismatch = [
        r["case"] for r in rows if r.get("eager_matches_onnx") is False or r.get("compile_matches_onnx") is False
    ]
    lines += ["", f"Torch contenders that differ from the ONNX reference: {', '.join(mismatch) or 'none'}."]
    write_results(results, "bench-h100", meta, rows, summary, "\n".join(lines))
    _chart(rows, results / "bench-h100.png", meta)
    print(json.dumps(summary))
    return 0


def _chart(rows: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["case"].replace("_float", "\nfp") for r in rows]
    series = [
        ("opforge untuned", "opforge_untuned_us"),
        ("opforge tuned", "opforge_tuned_us"),
        ("PyTorch eager", "eager_us"),
        ("torch.compile", "compile_us"),
        ("roofline", "roofline_us"),
    ]
    fig, ax = plt.subplots(figsize=(18, 7))
    w = 0.16
    for k, (label, key) in enumerate(series):
        vals = [(r[key] or 0) for r in rows]
        ax.bar([i + (k - 2) * w for i in range(len(rows))], vals, w, label=label)
    ax.set_yscale("log")
    ax.set_ylabel("µs per call (log)")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=70, fontsize=7)
    ax.legend()
    ax.set_title(f"opforge vs PyTorch — {meta['device']}, {meta['date_utc']} UTC")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("build", "run"):
        p = sub.add_parser(name)
        p.add_argument("bundle", type=Path)
        if name == "run":
            p.add_argument("out", type=Path)
            p.add_argument("--only", default="", help="only cases whose name contains this")
        p.add_argument("--dtypes", default="float32,float16")
    r = sub.add_parser("report")
    r.add_argument("parts", type=Path)
    r.add_argument("results", type=Path)
    a = ap.parse_args()
    if a.cmd == "build":
        build(a.bundle, a.dtypes.split(","))
        return 0
    if a.cmd == "run":
        return run(a.bundle, a.out, a.dtypes.split(","), a.only)
    return report(a.parts, a.results)


if __name__ == "__main__":
    sys.exit(main())
