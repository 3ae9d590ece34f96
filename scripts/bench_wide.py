#!/usr/bin/env python3
"""The wide benchmark (opforge.bench.wide): ops real models need plugins for, at fixed realistic shapes, and chains
of adjacent nodes fused into one plugin; fp32 and fp16 where the op allows.

Contenders, timed the same way in the same run (scripts/bench.py's method, opforge.bench.timing): opforge untuned
(DLight defaults) and tuned (the fastest candidate of the tuning space that passed the harness check under both
poisons), both as plugins through the IPluginV3 harness's enqueue; PyTorch eager of the op registry's counterparts;
torch.compile(mode="max-autotune-no-cudagraphs") of the same function; the roofline (graph inputs read and outputs
written once, at the measured device-to-device bandwidth); an empty kernel. A contender whose outputs differ from
the ONNX reference is marked and left out of the ratios. Tuning time per op = CPU build of every candidate + GPU
measurement.

python scripts/bench_wide.py build BUNDLE [--only S] [--space small|full]  # CPU + TVM: candidates per workload
python scripts/bench_wide.py run BUNDLE OUT [--only SUBSTR]  # GPU: measure candidates, torch contenders
python scripts/bench_wide.py report OUT RESULTS_DIR          # write bench-wide-h100.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def build(bundle: Path, only: str, space: str = "small") -> None:
    from opforge.bench.wide import workloads
    from opforge.core.errors import OpforgeError
    from opforge.extract.groups import fusion_groups
    from opforge.extract.model_io import opset_of
    from opforge.extract.subgraph import extract_groups
    from opforge.tune.candidates import build_bundle
    from opforge.tune.space import candidates, small_candidates
    from opforge.verify.results import bundle_commit

    bundle.mkdir(parents=True, exist_ok=True)
    index = bundle / "bench-wide-build.json"
    info = json.loads(index.read_text()) if index.is_file() else {"workloads": {}}
    info["commit"] = bundle_commit()
    info["space"] = space
    configs = small_candidates() if space == "small" else candidates()
    for w in workloads(only):
        if w.name in info["workloads"] and "error" not in info["workloads"][w.name]:
            continue  # resumable: built before
        model = w.model()
        groups = fusion_groups(model, list(model.graph.node))
        entry: dict = {
            "nodes": [n.op_type for n in model.graph.node],
            "plugins": len(groups),
            "note": w.note,
            "commit": info["commit"],  # a resumed build may span commits: each workload names its own
        }
        t0 = time.perf_counter()
        try:
            if len(groups) != 1:
                raise OpforgeError(f"the workload's nodes form {len(groups)} groups, not one fused plugin")
            (sub,) = extract_groups(model, groups)
            twin = w.reference_model() if w.dtype == "float16" else None
            (bundle / w.name).mkdir(parents=True, exist_ok=True)
            (bundle / w.name / "workload.onnx").write_bytes(model.SerializeToString())
            b = build_bundle(
                sub, groups[0][0], opset_of(model), bundle / w.name, {}, configs=configs, reference_model=twin
            )
            entry.update(
                candidates=len(b["candidates"]),
                built=sum("library" in c for c in b["candidates"]),
                lower_errors=sorted({c["error"][:160] for c in b["candidates"] if "error" in c})[:3],
            )
            if not entry["built"]:
                entry["error"] = "no candidate built: " + "; ".join(entry["lower_errors"])
        except OpforgeError as e:
            entry["error"] = str(e)[:300]
        entry["cpu_s"] = round(time.perf_counter() - t0, 1)
        info["workloads"][w.name] = entry
        print(f"{w.name}: {entry.get('error') or str(entry['built']) + ' candidates'} ({entry['cpu_s']}s)", flush=True)
        index.write_text(json.dumps(info, indent=1))  # after each workload: resumable


def _compare_all(got, refs, dtype: str):
    """The comparison of a contender's outputs with the ONNX reference: the first output that differs, else the
    last one's."""
    import numpy as np

    from opforge.verify.compare import Comparison, compare

    got = got if isinstance(got, tuple) else (got,)
    if len(got) != len(refs):
        return Comparison(False, float("inf"), float("inf"), -1, 0)
    diff = None
    for g, r in zip(got, refs):
        arr = g.float().cpu().numpy() if g.is_floating_point() else g.cpu().numpy()
        diff = compare(np.asarray(arr).astype(r.dtype), r, r.dtype.name if dtype != "float16" else dtype)
        if not diff.ok:
            break
    return diff


def run(bundle: Path, out: Path, only: str, part: str = "0/1") -> int:
    """Measure the workloads (those whose index is I mod N for part I/N: a run split over device calls)."""
    import numpy as np
    import onnx
    import torch

    from opforge.bench.timing import d2d_bandwidth, empty_kernel_us, l2_read_bandwidth, torch_contenders
    from opforge.bench.wide import moved_bytes, sampled_bytes, torch_graph, workload_inputs, workloads
    from opforge.runtime.launcher import Context
    from opforge.tune.measure import measure_bundle, reference
    from opforge.tune.records import TuningRecords
    from opforge.verify.results import run_metadata

    out.mkdir(parents=True, exist_ok=True)
    device = Context(0).name
    built = json.loads((bundle / "bench-wide-build.json").read_text())
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    bandwidth = d2d_bandwidth(torch)
    try:
        l2_bandwidth = l2_read_bandwidth(torch)
    except Exception as e:  # the floor is extra information: the run goes on without it
        print(f"L2 read bandwidth not measured: {type(e).__name__}: {e}", flush=True)
        l2_bandwidth = None
    empty_us = empty_kernel_us(torch, flush)
    print(
        f"{device}: D2D {bandwidth / 1e12:.2f} TB/s, L2 read {(l2_bandwidth or 0) / 1e12:.2f} TB/s, "
        f"empty kernel {empty_us:.2f} µs",
        flush=True,
    )

    def contend(row: dict, w, model, d: Path) -> None:
        """The PyTorch contenders of workload w on the inputs the reference sees, checked against it."""
        sub = onnx.load(str(d / "subgraph.onnx")) if (d / "subgraph.onnx").is_file() else model
        inputs, by_name = workload_inputs(model, sub, np.random.default_rng(1))
        inits = {t.name for t in model.graph.initializer}
        runtime = [vi.name for vi in model.graph.input if vi.name not in inits]
        sampled = sampled_bytes(model, by_name)  # RoiAlign's sampling points, read through L2 at best
        if sampled and l2_bandwidth:
            row.update(sampled_MB=round(sampled / 1e6, 3), l2_floor_us=sampled / l2_bandwidth * 1e6)
        out_dtypes = [
            np.dtype(onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type)).name for o in sub.graph.output
        ]
        try:
            refs = reference(d, sub, inputs, out_dtypes)
        except Exception as e:
            refs = None
            row["reference_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        tensors = [torch.from_numpy(np.ascontiguousarray(by_name[n])).cuda() for n in runtime]
        try:
            fn = torch_graph(torch, model)
        except NotImplementedError as e:
            fn = None
            row["torch_error"] = str(e)
        if fn is not None:
            matches = None if refs is None else (lambda out, refs=refs, dt=w.dtype: _compare_all(out, refs, dt))
            row.update(torch_contenders(torch, fn, tensors, matches, flush))

    rows = []
    i, n = (int(x) for x in part.split("/"))
    for w in [w for k, w in enumerate(workloads(only)) if k % n == i]:
        b = built["workloads"].get(w.name, {})
        model = w.model()
        row = {
            "workload": w.name,
            "dtype": w.dtype,
            "nodes": b.get("nodes"),
            "plugins": b.get("plugins"),
            "moved_MB": round(moved_bytes(model) / 1e6, 3),
            "roofline_us": moved_bytes(model) / bandwidth * 1e6,
            "empty_kernel_us": empty_us,
            "tuning_cpu_s": b.get("cpu_s"),
            "note": w.note,
        }
        d = bundle / w.name
        if "error" in b or not (d / "tune.json").is_file():
            row["opforge_error"] = b.get("error", "not built")
        else:
            t0 = time.perf_counter()
            try:
                recs = measure_bundle(d, isolate=False, device=device)  # this process runs torch on the GPU
            except Exception as e:  # a workload that cannot be measured is a row saying why, the run goes on
                recs = []
                row["opforge_error"] = f"{type(e).__name__}: {str(e)[:280]}"
            row["tuning_gpu_s"] = round(time.perf_counter() - t0, 1)
            store = TuningRecords(out / "records" / f"{w.name}.jsonl")
            for r in recs:
                store.append(r)
            best = store.best(recs[0].workload) if recs else None
            untuned = next((r for r in recs if r.label == "dlight-default"), None)
            row.update(
                opforge_untuned_us=untuned.us if untuned and untuned.ok else None,
                opforge_tuned_us=best.us if best else None,
                tuned_config=best.label if best else None,
                candidates=len(recs),
                candidates_ok=sum(r.ok for r in recs),
            )
            if untuned and not untuned.ok:
                row["opforge_error"] = f"untuned: {untuned.error}"[:300]
        try:  # torch contenders on the same inputs, checked against the ONNX reference
            contend(row, w, model, d)
        except Exception as e:  # a workload whose contenders cannot run is a row saying why; the run goes on
            row["torch_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
        commits = sorted({b.get("commit", built.get("commit", "?")) for b in built["workloads"].values()})
        meta = run_metadata(
            device,
            {
                "opforge_commit": ", ".join(commits),
                "d2d_TBps": bandwidth / 1e12,
                "l2_read_TBps": (l2_bandwidth or 0) / 1e12,
            },
        )
        tag = (f"-{only}" if only else "") + (f"-{i}of{n}" if n > 1 else "")
        (out / f"bench-wide-part{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


def report(parts_dir: Path, results: Path) -> int:
    from opforge.bench.timing import geomean
    from opforge.verify.results import run_metadata, write_results

    # Oldest run first: a later run of a workload (say, after its kernel changed) replaces its earlier row.
    parts = sorted(
        (json.loads(p.read_text()) for p in parts_dir.glob("bench-wide-part*.json")),
        key=lambda p: p["meta"]["date_utc"],
    )
    rows = list({r["workload"]: r for p in parts for r in p["rows"]}.values())
    commits = dict.fromkeys(p["meta"].get("opforge_commit", "?") for p in parts)
    meta = run_metadata(
        parts[0]["meta"]["device"],
        {
            "opforge_commit": ", ".join(commits),
            "d2d_TBps": parts[0]["meta"].get("d2d_TBps"),
            "l2_read_TBps": parts[0]["meta"].get("l2_read_TBps"),
            "gpu_runs": [f"{p['meta']['date_utc']} UTC: {p['meta']['command']}" for p in parts],
        },
    )

    def usable(r: dict, label: str) -> float | None:
        """A contender's time, only where it computes what ONNX computes."""
        return r.get(f"{label}_us") if r.get(f"{label}_matches_onnx") else None

    for r in rows:
        t = r.get("opforge_tuned_us")
        eager, comp = usable(r, "eager"), usable(r, "compile")
        r["tuned_vs_eager"] = eager / t if t and eager else None
        r["tuned_vs_compile"] = comp / t if t and comp else None
        r["tuned_vs_untuned"] = r["opforge_untuned_us"] / t if t and r.get("opforge_untuned_us") else None
        r["tuned_pct_roofline"] = 100 * r["roofline_us"] / t if t else None
        r["tuning_total_s"] = (r.get("tuning_cpu_s") or 0) + (r.get("tuning_gpu_s") or 0)
    big = [r for r in rows if r["moved_MB"] >= 50]
    vs_compile = [r["tuned_vs_compile"] for r in rows if r["tuned_vs_compile"]]
    summary = {
        "workloads": len(rows),
        "op_workloads": len({r["workload"].rsplit("_", 1)[0] for r in rows}),
        "opforge_failed": sum(1 for r in rows if not r.get("opforge_tuned_us")),
        "geomean_tuned_vs_compile": round(geomean(vs_compile) or 0, 3),
        "geomean_tuned_vs_eager": round(geomean([r["tuned_vs_eager"] for r in rows]) or 0, 3),
        "workloads_below_0.5x_compile": sum(1 for x in vs_compile if x < 0.5),
        "workloads_over_50MB": len(big),
        "workloads_over_50MB_at_70pct_roofline": sum((r["tuned_pct_roofline"] or 0) >= 70 for r in big),
        "max_tuning_s_per_op": max((r["tuning_total_s"] for r in rows), default=0),
    }

    def f(x, nd=1):
        return "-" if x is None else f"{x:.{nd}f}"

    lines = [
        "µs per call (median of 50 CUDA-graph replays of 20 back-to-back calls, L2 flushed before each replay). "
        "A contender that differs from the ONNX reference is marked ✗ and left out of the ratios.",
        "",
        "| workload | MB | roofline | opforge untuned | opforge tuned (config) | eager | torch.compile | "
        "vs eager | vs compile | % roofline | tuning s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = {k: "" if r.get(f"{k}_matches_onnx", True) else " ✗" for k in ("eager", "compile")}
        tuned = f"{f(r.get('opforge_tuned_us'))} ({r.get('tuned_config')})" if r.get("opforge_tuned_us") else "failed"
        lines.append(
            f"| {r['workload']} | {r['moved_MB']:.1f} | {f(r['roofline_us'])} | {f(r.get('opforge_untuned_us'))} | "
            f"{tuned} | {f(r.get('eager_us'))}{mark['eager']} | {f(r.get('compile_us'))}{mark['compile']} | "
            f"{f(r['tuned_vs_eager'], 2)}x | {f(r['tuned_vs_compile'], 2)}x | {f(r['tuned_pct_roofline'], 0)}% | "
            f"{f(r['tuning_total_s'])} |"
        )

    def how(diff: dict) -> str:
        if diff["bad"] < 0:
            return "outputs of another count or shape"
        return f"{diff['bad']} of {diff['elements']} elements out of tolerance, max abs error {diff['max_abs_err']:.3g}"

    differing = [
        f"- {r['workload']} {k}: {how(r[f'{k}_onnx_diff'])}"
        for r in rows
        for k in ("eager", "compile")
        if r.get(f"{k}_onnx_diff")
    ]
    floors = [
        f"- {r['workload']}: each box reads the distinct map pixels under its sampling points' corners, "
        f"{r['sampled_MB']:.0f} MB over all boxes and channels; read once per box from L2, that is "
        f"{r['l2_floor_us']:.1f} µs at this run's L2 read bandwidth, {100 * r['roofline_us'] / r['l2_floor_us']:.0f}% "
        f"of the roofline at most for a kernel that shares no pixels between boxes in L1 (opforge's holds each "
        f"map plane in shared memory, so the map crosses HBM and L2 once); opforge reaches "
        f"{r['tuned_pct_roofline'] or 0:.0f}%"
        for r in rows
        if r.get("l2_floor_us")
    ]
    if floors:
        head = "Gathers that read more than the roofline counts (opforge.bench.wide.sampled_bytes):"
        lines += ["", head, "", *floors]
    if differing:
        head = "Contenders marked ✗ (against the ONNX reference, at the tolerance opforge is held to):"
        lines += ["", head, "", *differing]
    failed = [f"- {r['workload']}: {r.get('opforge_error', '')}" for r in rows if not r.get("opforge_tuned_us")]
    if failed:
        lines += ["", "opforge failures:", "", *failed]
    write_results(results, "bench-wide-h100", meta, rows, summary, "\n".join(lines))
    _chart(rows, results / "bench-wide-h100.png", meta)
    print(json.dumps(summary))
    return 0


def _chart(rows: list[dict], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(r["workload"], r["tuned_vs_compile"]) for r in rows if r.get("tuned_vs_compile")]
    fig, ax = plt.subplots(figsize=(12, max(4, 0.3 * len(data))))
    ax.barh([n for n, _ in data], [v for _, v in data], color=["#4a7bd0" if v >= 1 else "#d0804a" for _, v in data])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("opforge tuned speed vs torch.compile max-autotune (x, log)")
    ax.set_title(f"opforge wide benchmark — {meta['device']}, {meta['date_utc']} UTC")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("bundle", type=Path)
    b.add_argument("--only", default="")
    b.add_argument("--space", choices=("small", "full"), default="small", help="the tuning space (tune/space.py)")
    r = sub.add_parser("run")
    r.add_argument("bundle", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--only", default="")
    r.add_argument("--part", default="0/1", metavar="I/N", help="only workloads I, I+N, I+2N, ... (split runs)")
    p = sub.add_parser("report")
    p.add_argument("parts", type=Path)
    p.add_argument("results", type=Path)
    a = ap.parse_args()
    if a.cmd == "build":
        build(a.bundle, a.only, a.space)
        return 0
    if a.cmd == "run":
        return run(a.bundle, a.out, a.only, a.part)
    return report(a.parts, a.results)


if __name__ == "__main__":
    sys.exit(main())
