"""Shared-memory bank conflicts of RoiAlign's plane kernel, modelled on the CPU for several ways of mapping outputs
to a warp's lanes: how many wavefronts a warp's shared-memory read takes (1 when its 32 addresses fall in distinct
banks or coincide; k when k distinct addresses share a bank).

The kernel (opforge.lower.kernels.roi_align_plane) reads, for each output, the 4 corners of each of its sampling
points from a padded plane in shared memory (row stride W + 1 words), 16 reads for a sampling ratio of 2. Where
they land depends on the boxes, so the model takes the wide benchmark's FPN workload (bench.wide, its boxes drawn
from RoiAlign's input domain with the benchmark's seed) and replays the reads warp by warp, for:

- kernel: a warp on 32 consecutive outputs (box-major, then output row, then column), the reads in the kernel's
  order (point by point, corners in order): what the committed kernel does;
- box column: a lane per (box, output column), each warp instruction one output row;
- box row: a lane per (box, output row), each instruction one output column;
- sampling column: 16 lanes per box, a lane per sampling column, each instruction one sampling row;
- oracle: the kernel's warps, but each instruction lets every lane pick whichever of its remaining reads adds
  least to its bank (greedy): a bound no fixed order reaches;

and, for the kernel's mapping, other row strides. Nsight Compute measured 2.44 wavefronts per shared-memory read
for the kernel (results/roialign-anatomy-h100.md); the model's first row is the check that it models the kernel.

python scripts/roialign_banks.py results      # writes results/roialign-banks.{json,md} (CPU, about a minute)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BANKS = 32
WARPS = 1531  # warps replayed per mapping: all of one channel's 49,000 outputs (1000 boxes x 7 x 7)
ORACLE_WARPS = 300


def sampling_lows(start: float, size: float, bins: int, ratio: int, extent: int) -> np.ndarray:
    """The low line of each of a box's bins * ratio sampling points on one axis (half_pixel: no minimum size), -1
    for a point off the map, as opforge's table kernel writes them."""
    step = size / bins
    points = np.array([start + p * step + (i + 0.5) * step / ratio for p in range(bins) for i in range(ratio)])
    lows = np.clip(points, 0, extent - 1).astype(np.int64)
    return np.where((points < -1.0) | (points > extent), -1, lows)


def workload_lines():
    """The FPN workload's map size, pooled size, sampling ratio and each box's y and x sampling lines."""
    from opforge.bench.wide import workload_inputs, workloads

    (w,) = list(workloads("roialign_fpn_256x200x272"))
    model = w.model()
    attrs = {a.name: a for a in model.graph.node[0].attribute}
    scale, ratio = attrs["spatial_scale"].f, attrs["sampling_ratio"].i
    bins = attrs["output_height"].i
    _n, _c, height, width = (d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    rois = workload_inputs(model, model, np.random.default_rng(0))[0][1].astype(np.float64) * scale - 0.5
    ys = np.array([sampling_lows(b[1], b[3] - b[1], bins, ratio, height) for b in rois])
    xs = np.array([sampling_lows(b[0], b[2] - b[0], bins, ratio, width) for b in rois])
    return (height, width, bins, ratio), ys, xs


def output_reads(ys, xs, box: int, oy: int, ox: int, ratio: int, stride: int) -> list[int]:
    """An output's shared-memory word addresses in the kernel's order: point by point, corners in order (a point
    off the map is modelled as reading at the kernel's clamped base, address 0; the kernel skips it)."""
    reads = []
    for i in range(ratio):
        for j in range(ratio):
            y, x = ys[box, oy * ratio + i], xs[box, ox * ratio + j]
            base = 0 if y < 0 or x < 0 else y * stride + x
            reads += [base, base + 1, base + stride, base + stride + 1]
    return reads


def wavefronts(addresses) -> int:
    """Wavefronts of one warp-wide read: the most distinct addresses in one bank (equal addresses are broadcast)."""
    distinct = np.unique(np.asarray(addresses))
    return int(np.bincount(distinct % BANKS, minlength=BANKS).max())


def replay(instructions) -> float:
    """Mean wavefronts per warp instruction over an iterable of 32-address instructions."""
    counts = [wavefronts(a) for a in instructions]
    return float(np.mean(counts))


def kernel_order(ys, xs, dims, stride: int, warps: int = WARPS):
    _h, _w, bins, ratio = dims
    per_box = bins * bins
    for warp in range(warps):
        outs = [divmod(o, per_box) for o in range(warp * 32, warp * 32 + 32)]
        reads = [output_reads(ys, xs, b, q // bins, q % bins, ratio, stride) for b, q in outs]
        for k in range(len(reads[0])):
            yield [r[k] for r in reads]


def box_lines(ys, xs, dims, stride: int, lane_axis: str):
    """A lane per (box, output column) (`lane_axis` "column") or per (box, output row) ("row"); each warp
    instruction then takes one output row (or column) of every lane's box."""
    _h, _w, bins, ratio = dims
    for warp in range(WARPS // bins):
        lanes = [divmod(t, bins) for t in range(warp * 32, warp * 32 + 32)]  # (box, the lane's line)
        for other in range(bins):
            yx = [(other, line) if lane_axis == "column" else (line, other) for _b, line in lanes]
            reads = [output_reads(ys, xs, b, oy, ox, ratio, stride) for (b, _), (oy, ox) in zip(lanes, yx)]
            for k in range(len(reads[0])):
                yield [r[k] for r in reads]


def sampling_column(ys, xs, dims, stride: int):
    _h, _w, bins, ratio = dims
    lines = bins * ratio
    group = 1 << (lines - 1).bit_length()  # lanes per box: the sampling columns, rounded up to a power of 2
    for warp in range(min(WARPS * bins * bins // lines // (32 // group), len(ys) // (32 // group))):
        lanes = [(warp * (32 // group) + t // group, min(t % group, lines - 1)) for t in range(32)]
        for i in range(lines):
            for dy in (0, stride):
                for dx in (0, 1):
                    yield [
                        0 if ys[b, i] < 0 or xs[b, j] < 0 else ys[b, i] * stride + xs[b, j] + dy + dx for b, j in lanes
                    ]


def oracle(ys, xs, dims, stride: int) -> float:
    _h, _w, bins, ratio = dims
    per_box = bins * bins
    rng = np.random.default_rng(0)
    counts = []
    for warp in range(ORACLE_WARPS):
        outs = [divmod(o, per_box) for o in range(warp * 32, warp * 32 + 32)]
        left = [output_reads(ys, xs, b, q // bins, q % bins, ratio, stride) for b, q in outs]
        for _ in range(len(left[0])):
            load, taken = np.zeros(BANKS, int), set()
            for lane in rng.permutation(32):
                pick = min(left[lane], key=lambda a: 0 if a in taken else load[a % BANKS])
                left[lane].remove(pick)
                if pick not in taken:
                    taken.add(pick)
                    load[pick % BANKS] += 1
            counts.append(int(load.max()))
    return float(np.mean(counts))


def _measured(results: Path) -> float | None:
    """Nsight Compute's wavefronts per shared-memory read of the whole kernel, from the anatomy's results."""
    import json

    path = results / "roialign-anatomy-h100.json"
    if not path.is_file():
        return None
    rows = json.loads(path.read_text())["rows"]
    whole = next((r for r in rows if r["variant"] == "whole"), {})
    value = whole.get("counters", {}).get("wavefronts_per_shared_load")
    return round(value, 3) if value is not None else None


def main(out: Path) -> int:
    from opforge.verify.results import bundle_commit, run_metadata, write_results

    dims, ys, xs = workload_lines()
    height, width, bins, ratio = dims
    stride = width + 1
    rows = [
        {"mapping": "kernel", "stride": stride, "wavefronts_per_read": replay(kernel_order(ys, xs, dims, stride))},
        {
            "mapping": "box column",
            "stride": stride,
            "wavefronts_per_read": replay(box_lines(ys, xs, dims, stride, "column")),
        },
        {"mapping": "box row", "stride": stride, "wavefronts_per_read": replay(box_lines(ys, xs, dims, stride, "row"))},
        {
            "mapping": "sampling column",
            "stride": stride,
            "wavefronts_per_read": replay(sampling_column(ys, xs, dims, stride)),
        },
        {"mapping": "oracle", "stride": stride, "wavefronts_per_read": oracle(ys, xs, dims, stride)},
    ]
    for s in (width + 2, width + 4, width + 8, width + 16, width + 33):
        rows.append({"mapping": "kernel", "stride": s, "wavefronts_per_read": replay(kernel_order(ys, xs, dims, s))})
    for r in rows:
        r["wavefronts_per_read"] = round(r["wavefronts_per_read"], 3)
        print(r, flush=True)
    summary = {
        "kernel_modelled": rows[0]["wavefronts_per_read"],
        "kernel_measured_ncu": _measured(out),
        "best_fixed_mapping": min(r["wavefronts_per_read"] for r in rows if r["mapping"] != "oracle"),
        "oracle": rows[4]["wavefronts_per_read"],
    }
    lines = [
        f"RoiAlign's plane kernel on the wide benchmark's FPN workload ({height}x{width} map, {bins}x{bins} outputs,",
        f"sampling ratio {ratio}, 1000 boxes): wavefronts per warp-wide shared-memory read, modelled (1.0 = no bank",
        "conflict). The measured value for the kernel is in results/roialign-anatomy-h100.md.",
        "",
        "| mapping | row stride (words) | wavefronts per read |",
        "|---|---|---|",
    ]
    lines += [f"| {r['mapping']} | {r['stride']} | {r['wavefronts_per_read']:.2f} |" for r in rows]
    meta = run_metadata("CPU model (no GPU)", {"opforge_commit": bundle_commit()})
    write_results(out, "roialign-banks", meta, rows, summary, "\n".join(lines))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))
