"""Where RoiAlign's plane kernel (opforge.lower.kernels.roi_align_plane) spends its time on the GPU.

The wide benchmark's FPN workload (bench.wide, roialign_fpn_*) lowered as the benchmark runs it (untuned), then with
the plane's loads only and with the pooling only (`parts`), each variant's kernels timed alone. The map and the
output are what bound the roofline; the two parts show what a faster kernel would have to overlap or speed up.
Where Nsight Compute (`ncu`) is installed, the pooling kernel of each variant is also run once under it, for the
hardware counters that say what bounds it: the L1 data pipe's wavefronts (shared memory, with its bank conflicts,
and global accesses share it), instructions, cycles, DRAM bytes.

A probe of a different algorithm runs beside it (scripts/roialign_probes/row_sweep.cu, hand-written CUDA, not part
of opforge): a sweep down the map's rows with 8 channels interleaved per pixel, whose corner reads are free of bank
conflicts by construction; it is checked against the plane kernel's output and timed whole, without its output
stores, without its map loads, and without either.

python scripts/roialign_anatomy.py build BUNDLE      # CPU machine (TVM, nvcc): the variants as cubins
python scripts/roialign_anatomy.py run BUNDLE OUT    # GPU machine (cupy): time them, OUT/roialign-anatomy-h100.*
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np

VARIANTS = {"whole": ("load", "pool"), "loads only": ("load",), "pooling only": ("pool",)}
SEED = 0


def _workload():
    from opforge.bench.wide import workloads

    (w,) = [w for w in workloads("roialign_fpn_256x200x272")]
    return w


def build(bundle: Path) -> int:
    from opforge.build.nvcc import gencode_flags, nvcc_to
    from opforge.extract.subgraph import NodeSubgraph
    from opforge.lower.kernels import roi_align_plane
    from opforge.lower.tvm_lower import lower_subgraph
    from opforge.verify.results import bundle_commit

    bundle.mkdir(parents=True, exist_ok=True)
    w = _workload()
    model = w.model()
    node = model.graph.node[0]
    sub = NodeSubgraph(node.name, node.op_type, model, list(node.input), {}, list(node.output))
    whole = roi_align_plane.roi_align_plane_te
    info: dict = {"workload": w.name, "commit": bundle_commit(), "variants": {}}
    for k, (name, parts) in enumerate(VARIANTS.items()):
        roi_align_plane.roi_align_plane_te = functools.partial(whole, parts=parts)
        try:
            plan = lower_subgraph(sub)
        finally:
            roi_align_plane.roi_align_plane_te = whole
        src = bundle / f"v{k}.cu"
        src.write_text(plan.cuda_source)
        nvcc_to(bundle / f"v{k}.cubin", ["-cubin", "-O3", "-std=c++17", *gencode_flags()[:1], str(src)], str(src))
        launches = [
            {
                "kernel": lc.kernel,
                "grid": int(lc.grid[0]),
                "block": int(lc.block[0]),
                "smem": int(lc.shared_mem),
                "args": [{"kind": a.kind, "offset": int(a.offset)} for a in lc.args],
            }
            for lc in plan.launches
        ]
        info["variants"][name] = {"cubin": f"v{k}.cubin", "launches": launches}
        print(f"{name}: {len(launches)} launches")
    x_shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert x_shape == [1, 256, 200, 272], x_shape  # the probe's constants (row_sweep.cu)
    probe = Path(__file__).parent / "roialign_probes" / "row_sweep.cu"
    nvcc_to(bundle / "row_sweep.cubin", ["-cubin", "-O3", "-std=c++17", *gencode_flags()[:1], str(probe)], str(probe))
    info["probe"] = {"cubin": "row_sweep.cubin", "kernel": "row_sweep"}
    (bundle / "anatomy.json").write_text(json.dumps(info, indent=1))
    return 0


# The probe's geometry (row_sweep.cu): map height and width, channels per block, ring rows, row pitch in pixels,
# row ranges per channel group, output size and sampling ratio.
PROBE = {"H": 200, "W": 272, "CG": 8, "K": 24, "B": 4, "P": 274, "ranges": 4, "out": 7, "ratio": 2}


def _lines(start: np.ndarray, size: np.ndarray, extent: int) -> tuple[np.ndarray, np.ndarray]:
    """Each box's out*ratio sampling lines on one axis, as ONNX's RoiAlign computes them in float32: the low
    row (or column), -1 for a line off the map, and the fraction (0 where clamped to the last one)."""
    f32 = np.float32
    out, ratio = PROBE["out"], PROBE["ratio"]
    bin_ = (size / f32(out)).astype(f32)
    k = np.arange(out * ratio)
    p, i = (k // ratio).astype(f32), (k % ratio).astype(f32)
    y = (start[:, None] + p[None, :] * bin_[:, None] + (i[None, :] + f32(0.5)) * bin_[:, None] / f32(ratio)).astype(f32)
    off = (y < -1) | (y > extent)
    y = np.maximum(y, f32(0))
    lo = y.astype(np.int32)
    last = lo >= extent - 1
    lo = np.where(last, extent - 1, lo)
    frac = np.where(last, f32(0), y - lo.astype(f32)).astype(f32)
    return np.where(off, -1, lo).astype(np.int32), frac


def _sweep_tables(boxes: np.ndarray) -> dict:
    """The probe's inputs: per box and output column the two x lines, per output row (box, ph) its two y lines,
    the rows bucketed by their last map row (CSR), and row ranges of equal work per channel group."""
    out = PROBE["out"]
    x1, y1, x2, y2 = (boxes[:, k].astype(np.float32) for k in (1, 2, 3, 4))

    def pack(lo, frac):
        t = np.stack([lo, frac.view(np.int32)], axis=-1).astype(np.int32)
        return t.reshape(len(boxes), out, 4)  # (lo0, frac0, lo1, frac1) per output row or column

    ylo, yfrac = _lines(y1, y2 - y1, PROBE["H"])
    xlo, xfrac = _lines(x1, x2 - x1, PROBE["W"])
    pairs = ylo.reshape(-1, out, 2)
    valid = pairs >= 0
    last = np.where(valid.any(-1), np.where(valid, pairs, -10).max(-1) + 1, 0).reshape(-1)
    first = np.where(valid.any(-1), np.where(valid, pairs, 1 << 20).min(-1), 0).reshape(-1)
    span = int((last - first + 1).max())
    assert span <= PROBE["K"] - 2 * PROBE["B"] + 1, span  # rows an output row reads must fit the ring
    order = np.argsort(last, kind="stable").astype(np.int32)
    row_ptr = np.concatenate([[0], np.cumsum(np.bincount(last, minlength=PROBE["H"] + 1))]).astype(np.int32)
    n = PROBE["ranges"]
    cuts = [int(np.searchsorted(row_ptr[1:], len(order) * k / n)) + 1 for k in range(1, n)]
    return {
        "yrec": pack(ylo, yfrac).reshape(-1, 4)[order],
        "xtab": pack(xlo, xfrac),
        "evbox": order,
        "row_ptr": row_ptr,
        "ranges": np.array([0, *cuts, PROBE["H"] + 1], np.int32),
    }


COUNTERS = {
    "cycles": "sm__cycles_elapsed.avg",
    "instructions": "smsp__inst_executed.sum",
    "shared_load_instructions": "smsp__inst_executed_op_shared_ld.sum",
    "shared_load_wavefronts": "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum",
    "shared_wavefronts": "l1tex__data_pipe_lsu_wavefronts_mem_shared.sum",
    "l1_wavefronts": "l1tex__data_pipe_lsu_wavefronts.sum",
    "l1_busy_pct": "l1tex__throughput.avg.pct_of_peak_sustained_active",
    "global_load_sectors": "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum",
    "global_store_sectors": "l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum",
    "dram_read_bytes": "dram__bytes_read.sum",
    "dram_write_bytes": "dram__bytes_write.sum",
}
ONCE = "OPFORGE_ANATOMY_ONCE"  # set (to a variant's name) when ncu runs this script: launch that variant once


def _setup(bundle: Path):
    """The variants' kernels, ready to launch on the workload's inputs: {variant: [(function, launch, args)]}, and
    the map and output arrays."""
    import cupy as cp

    from opforge.bench.wide import workload_inputs

    info = json.loads((bundle / "anatomy.json").read_text())
    w = _workload()
    model = w.model()
    x, rois, idx = workload_inputs(model, model, np.random.default_rng(SEED))[0]
    node = model.graph.node[0]
    scale = next(a.f for a in node.attribute if a.name == "spatial_scale")
    # What the plan's first kernel (the registry's rewrite and TVM's import) hands RoiAlign: (batch index, x1, y1,
    # x2, y2) scaled, minus half a pixel (half_pixel); that kernel is left out of the timings.
    boxes = np.concatenate([idx[:, None].astype(np.float32), rois * np.float32(scale) - np.float32(0.5)], axis=1)
    data = cp.asarray(x)
    out_arr = cp.empty((rois.shape[0], x.shape[1], 7, 7), cp.float32)
    workspace = cp.zeros(1 << 24, cp.uint8)
    variants = {}
    for name, v in info["variants"].items():
        calls = []
        module = cp.RawModule(path=str(bundle / v["cubin"]))
        for lc in v["launches"]:
            if "roi_align" not in lc["kernel"]:
                continue  # the boxes' rewrite, replaced by `boxes` above
            fn = module.get_function(lc["kernel"])
            if lc["smem"] > 48 * 1024:
                fn.max_dynamic_shared_size_bytes = lc["smem"]
            ptrs = {"input": data.data.ptr, "output": out_arr.data.ptr}
            args = tuple(cp.uint64(ptrs.get(a["kind"], workspace.data.ptr + a["offset"])) for a in lc["args"])
            calls.append((fn, lc, args))
        # The boxes where the plan's first RoiAlign kernel (the tables) reads them: its first argument.
        at = calls[0][1]["args"][0]
        assert at["kind"] == "workspace", calls[0][1]
        variants[name] = (calls, at["offset"])
    tables = {k: cp.asarray(v) for k, v in _sweep_tables(boxes).items()}
    fn = cp.RawModule(path=str(bundle / info["probe"]["cubin"])).get_function(info["probe"]["kernel"])
    smem = PROBE["K"] * PROBE["P"] * PROBE["CG"] * 4
    fn.max_dynamic_shared_size_bytes = smem
    grid = (x.shape[1] // PROBE["CG"], PROBE["ranges"])
    keys = ("yrec", "xtab", "evbox", "row_ptr", "ranges")

    def probe(output, mode: int = 0):
        fn(grid, (1024,), (data, *(tables[k] for k in keys), output, np.int32(mode)), shared_mem=smem)

    return info, variants, data, out_arr, workspace, boxes, probe


def _put_boxes(workspace, offset: int, boxes: np.ndarray) -> None:
    import cupy as cp

    workspace[offset : offset + boxes.nbytes] = cp.asarray(boxes.view(np.uint8).reshape(-1))
    cp.cuda.Device().synchronize()


def _counters(bundle: Path, variant: str, kernel: str) -> dict:
    """The COUNTERS of one launch of `kernel` in `variant`, from Nsight Compute; {} where it is not installed."""
    import csv
    import io
    import os
    import shutil
    import subprocess

    ncu = shutil.which("ncu") or next((p for p in ("/usr/local/cuda/bin/ncu",) if Path(p).exists()), None)
    if ncu is None:
        return {}
    cmd = [ncu, "--csv", "--metrics", ",".join(COUNTERS.values()), "-k", kernel, "--launch-count", "1"]
    cmd += [sys.executable, __file__, "run", str(bundle), "-"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, ONCE: variant}, timeout=300)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith('"')]
    values = {r["Metric Name"]: r["Metric Value"] for r in csv.DictReader(io.StringIO("\n".join(lines)))}
    if not values:
        return {"ncu_error": (done.stderr or done.stdout)[-300:]}
    by_metric = {m: k for k, m in COUNTERS.items()}
    return {by_metric[m]: float(v.replace(",", "")) for m, v in values.items() if m in by_metric}


def _graph_us(launch) -> float:
    """µs per call: 20 back-to-back calls in one CUDA graph (Python's launch overhead would time the host
    instead), replayed 5 times after one."""
    import cupy as cp

    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        for _ in range(20):
            launch()
        graph = stream.end_capture()
    graph.launch(stream)
    stream.synchronize()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record(stream)
    for _ in range(5):
        graph.launch(stream)
    stop.record(stream)
    stop.synchronize()
    return cp.cuda.get_elapsed_time(start, stop) / 100 * 1e3


PROBE_MODES = {"whole": 0, "no output stores": 1, "no map loads": 2, "neither": 3}


def run(bundle: Path, out: Path) -> int:
    import os

    import cupy as cp

    from opforge.verify.results import run_metadata, write_results

    info, variants, data, out_arr, workspace, boxes, probe = _setup(bundle)
    if os.environ.get(ONCE) == "row sweep":  # under ncu: the probe once
        probe(cp.empty_like(out_arr))
        cp.cuda.Device().synchronize()
        return 0
    if os.environ.get(ONCE):  # under ncu: one launch of each kernel of one variant
        calls, offset = variants[os.environ[ONCE]]
        _put_boxes(workspace, offset, boxes)
        for fn, lc, args in calls:
            fn((lc["grid"],), (lc["block"],), args, shared_mem=lc["smem"])
        cp.cuda.Device().synchronize()
        return 0
    device = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    x = data
    moved = x.nbytes + out_arr.nbytes
    rows = []
    for name, (calls, offset) in variants.items():
        _put_boxes(workspace, offset, boxes)
        times = [
            _graph_us(lambda fn=fn, lc=lc, args=args: fn((lc["grid"],), (lc["block"],), args, shared_mem=lc["smem"]))
            for fn, lc, args in calls
        ]
        rows.append(
            {
                "variant": name,
                "kernels": [c[1]["kernel"] for c in calls],
                "us": [round(t, 2) for t in times],
                "total_us": round(sum(times), 2),
                "shared_bytes": max(c[1]["smem"] for c in calls),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    # The probe, checked against the plane kernel's output (the whole variant, run again: the pooling-only
    # variant wrote its garbage into the same array), then timed in each mode.
    calls, offset = variants["whole"]
    _put_boxes(workspace, offset, boxes)
    for fn, lc, args in calls:
        fn((lc["grid"],), (lc["block"],), args, shared_mem=lc["smem"])
    expected = out_arr.get()
    got = cp.full_like(out_arr, cp.nan)
    probe(got)
    got = got.get()
    scratch = cp.empty_like(out_arr)
    sweep = {
        "max_abs_err_vs_plane_kernel": float(np.nanmax(np.abs(got - expected))),
        "unwritten": int(np.isnan(got).sum()),
        "us": {m: round(_graph_us(lambda v=v: probe(scratch, v)), 2) for m, v in PROBE_MODES.items()},
    }
    print(json.dumps(sweep), flush=True)
    outputs = out_arr.size
    for r in rows:
        if r["variant"] == "loads only":
            continue
        c = _counters(bundle, r["variant"], r["kernels"][-1])  # the plane kernel, run once under ncu
        if "shared_load_instructions" in c:
            c["shared_loads_per_output"] = c["shared_load_instructions"] * 32 / outputs
            c["wavefronts_per_shared_load"] = c["shared_load_wavefronts"] / max(c["shared_load_instructions"], 1)
            c["instructions_per_output"] = c["instructions"] * 32 / outputs
        r["counters"] = c
        print(json.dumps(c), flush=True)
    sweep["counters"] = _counters(bundle, "row sweep", "row_sweep")
    print(json.dumps(sweep["counters"]), flush=True)
    by = {r["variant"]: r for r in rows}
    summary = {
        "whole_us": by["whole"]["total_us"],
        "loads_only_us": by["loads only"]["total_us"],
        "pooling_only_us": by["pooling only"]["total_us"],
        "map_and_output_MB": round(moved / 1e6, 1),
        "loads_only_map_TBps": round(x.nbytes / (by["loads only"]["us"][-1] * 1e-6) / 1e12, 2),
    }
    lines = [
        f"Workload `{info['workload']}` (bench.wide), built at {info['commit']}: each variant's kernels timed alone",
        "(mean of 5 replays of a CUDA graph of 20 back-to-back launches, after one; the 56 MB map is about L2's size).",
        "`loads only`",
        "fills each plane and pools nothing; `pooling only` pools from a plane it never filled (its output is not",
        "RoiAlign's): the whole kernel is close to their sum, since one block per SM cannot load while it pools.",
        "",
        "| variant | kernels (µs each) | total µs | shared memory per block |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | {', '.join(f'{t:.1f}' for t in r['us'])} | {r['total_us']:.1f} | {r['shared_bytes']} |"
        for r in rows
    ]
    counted = [r for r in rows if "shared_load_instructions" in r.get("counters", {})]
    if counted:
        lines += [
            "",
            "The plane kernel run once under Nsight Compute (its clocks, not the timings' above): shared-memory loads",
            "per output (thread-level), wavefronts per shared-load instruction (1 without bank conflicts), how busy",
            "the L1 data pipe is (shared memory and the global loads and stores all pass through it; one wavefront",
            "a cycle), and instructions per output (thread-level):",
            "",
            "| variant | cycles | shared loads per output | wavefronts per shared load | L1 wavefronts (shared) | "
            "L1 busy | instructions per output |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in counted:
            c = r["counters"]
            lines.append(
                f"| {r['variant']} | {c['cycles']:,.0f} | {c['shared_loads_per_output']:.1f} | "
                f"{c['wavefronts_per_shared_load']:.2f} | {c['l1_wavefronts'] / 1e6:.1f} M "
                f"({c['shared_wavefronts'] / 1e6:.1f} M) | {c['l1_busy_pct']:.0f}% | "
                f"{c['instructions_per_output']:.0f} |"
            )
        summary["l1_busy_pct_whole"] = by["whole"].get("counters", {}).get("l1_busy_pct")
    else:
        lines += ["", "Nsight Compute was not found (or failed): no hardware counters in this run."]
    summary["row_sweep_probe_us"] = sweep["us"]["whole"]
    summary["row_sweep_probe_max_abs_err"] = sweep["max_abs_err_vs_plane_kernel"]
    c = sweep["counters"]
    lines += [
        "",
        "A different algorithm, probed (`scripts/roialign_probes/row_sweep.cu`, hand-written CUDA, not opforge's):",
        "blocks of 8 channels sweep down the map's rows through a ring of rows in shared memory, the 8 channels",
        "innermost, so a sampling point's 4 corners x 8 channels are one conflict-free 16-byte load per lane of a",
        "quarter-warp; an output row (box, ph) is pooled when its last map row arrives, so a box's 7 output rows",
        f"are written at 7 different times. Checked against the plane kernel: max abs error "
        f"{sweep['max_abs_err_vs_plane_kernel']:.3g}, {sweep['unwritten']} outputs unwritten.",
        "",
        "| probe mode | µs |",
        "|---|---|",
        *(f"| {m} | {t:.1f} |" for m, t in sweep["us"].items()),
    ]
    if "instructions" in c:
        lines += [
            "",
            f"Under Nsight Compute: {c['shared_wavefronts'] / 1e6:.1f} M shared-memory wavefronts (the plane kernel's "
            f"pooling: see above), {c['instructions'] / 1e6:.1f} M warp instructions, DRAM "
            f"{c['dram_read_bytes'] / 1e6:.1f} MB read and {c['dram_write_bytes'] / 1e6:.1f} MB written (the map "
            f"is {x.nbytes / 1e6:.1f} MB, the output {out_arr.nbytes / 1e6:.1f} MB).",
        ]
    meta = run_metadata(device, {"opforge_commit": info["commit"]})
    rows.append({"variant": "row sweep probe", **sweep})
    write_results(out, "roialign-anatomy-h100", meta, rows, summary, "\n".join(lines))
    return 0


if __name__ == "__main__":
    from opforge.verify.results import two_phase_main

    sys.exit(two_phase_main(__doc__, build, run))
