"""RoiAlign with each feature-map plane in shared memory: one block per (image, channel), every box read from it.

A thread per output reading its 4 sampling points' 16 corners from global memory reads each map pixel once per
box that samples it: boxes of a detector overlap, so that is several times the map, through L2 (1000 FPN boxes
on a 200x272 map: 419 MB against a 56 MB map; 295 µs on the H100, 13% of the roofline). Here one block holds a
plane (or a band of its rows when it does not fit) in shared memory and pools every box of its image from it, so
the map crosses HBM and L2 once. Two kernels:

  1. the boxes' sampling lines, one thread per box and line, into the workspace: per line the clamped low line
     (-1 for a line outside the map) and the fraction, computed once per box instead of once per output and
     channel (the float-to-int conversions run at a quarter of the FP32 rate);
  2. a block per (image, channel), per band of rows [r0, r0 + B]:
     a. the rows into shared memory, padded with a copy of the plane's last column and (after the map's last row)
        its last row, so a sampling point's corners are always at base, base + 1, base + W', base + W' + 1: the
        clamped `min(low + 1, extent - 1)` of ONNX's definition reads the copy, with weight 0 there exactly as
        the reference has;
     b. a thread per output of the image's boxes (consecutive threads on consecutive outputs of a box, so a
        warp's shared-memory reads stay within a few map rows), `unroll` outputs at a time with their table loads
        issued first: ONNX's sum (or max) over the sampling points, avg summing w1*v1 + w2*v2 + w3*v3 + w4*v4 per
        point in the reference's order and dividing once by the count.

When the plane is taller than shared memory holds, the bands run one after another and each output keeps its
partial sum (or max) in the output tensor between bands (float32 maps only; a point belongs to the band holding
its low row, so each point still sums its four corners in one place, but the points' sum is then taken band by
band). For a map of symbolic size the bands are sized when the plugin runs; one so wide that two padded rows
exceed the budget fails at launch, naming the kernel. The coordinates are those of `roi_align.roi_align_te` (the
same helpers, rounded as ONNX rounds them). An adaptive grid (sampling_ratio 0, Detectron2's and mmdetection's
default) has as many points per bin as the bin is large: kernel 1 then writes each box's geometry instead (start,
bin size and grid on each axis), and each output computes its grid's lines from it while it pools, from the same
plane. Boxes whose batch index is outside
[0, N) (outside ONNX's domain) are left unwritten.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import tvm
from tvm import te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from opforge.lower.kernels import kernel_ir
from opforge.lower.kernels.data_dependent import on_gpu
from opforge.lower.kernels.kernel_ir import as_index, index_dtype, static, vec_lanes
from opforge.lower.target import CudaTarget

# Shared memory one block may opt in to, per architecture (CUDA programming guide, "Technical Specifications per
# Compute Capability"); an architecture not listed gets CUDA's default 48 KB. A plugin checks at launch that the
# device grants what its kernel needs (templates/kernels.cu.j2) and fails naming the kernel if not.
OPT_IN_SHARED_BYTES = {
    "sm_70": 96 * 1024,
    "sm_75": 64 * 1024,
    "sm_80": 163 * 1024,
    "sm_86": 99 * 1024,
    "sm_87": 163 * 1024,
    "sm_89": 99 * 1024,
    "sm_90": 227 * 1024,
    "sm_100": 227 * 1024,
    "sm_103": 227 * 1024,
    "sm_120": 99 * 1024,
    "sm_121": 99 * 1024,
}
DEFAULT_OPT_IN_SHARED_BYTES = 48 * 1024
# 16-byte loads each thread keeps in flight while filling the plane: with one block per SM (a large plane), one
# per thread leaves HBM's latency uncovered.
LOADS_IN_FLIGHT = 4
TABLE_THREADS = 128
# Words per box of an adaptive grid's table (_geometry_table): start_h, start_w, bin_h, bin_w, grid_h, grid_w,
# batch index, padding to two 16-byte loads.
GEOMETRY_WORDS = 8


@dataclass(frozen=True)
class PlaneLayout:
    """How a block splits its plane: bands of `band_rows` map rows (all of them when `bands` is 1), and the shared
    memory that takes, out of `budget` bytes. For a plane of symbolic size the first three are None: the kernel
    computes them from the map's height and width when it runs."""

    band_rows: int | None
    bands: int | None
    shared_bytes: int | None
    budget: int


def shared_budget() -> int:
    """The shared memory a block may use on the target being compiled for (the CPU check uses the default target's,
    sm_90)."""
    target = tvm.target.Target.current(allow_none=True)
    is_cuda = target is not None and target.kind.name == "cuda"
    arch = str(target.attrs.get("arch", "")) if is_cuda else CudaTarget().arch
    return OPT_IN_SHARED_BYTES.get(arch, DEFAULT_OPT_IN_SHARED_BYTES)


def plan_layout(height: int, width: int, itemsize: int, budget: int, may_band: bool) -> PlaneLayout | None:
    """The layout for a height x width plane of `itemsize`-byte values, or None when it does not fit (`may_band`:
    whether bands may split the plane). Each band holds one more row and column than it pools (the padding)."""
    row_bytes = (width + 1) * itemsize
    if (height + 1) * row_bytes <= budget:
        band_rows = height
    else:
        most_rows = budget // row_bytes - 1
        if not may_band or most_rows < 1:
            return None
        band_rows = -(-height // -(-height // most_rows))  # bands of equal height
    return PlaneLayout(band_rows, -(-height // band_rows), (band_rows + 1) * row_bytes, budget)


def layout_for(data_shape, rois_dtype: str, data_dtype: str, sample_ratio: int) -> PlaneLayout | None:
    """The PlaneLayout for RoiAlign over `data_shape` (N, C, H, W), or None where this kernel does not apply:
    float64, a static plane too large for the target, or a symbolic plane of half values
    (it may need bands when it runs, and bands keep partial results in the output tensor: float32 only, so that
    half outputs round once)."""
    if "float64" in (rois_dtype, data_dtype):
        return None
    if data_shape is None or len(data_shape) != 4:
        return None
    height, width = static(data_shape[2]), static(data_shape[3])
    if 0 in (height, width):  # an empty map: nothing to hold
        return None
    itemsize = tvm.DataType(data_dtype).bits // 8
    budget = shared_budget()
    if height is not None and width is not None:
        return plan_layout(height, width, itemsize, budget, data_dtype == "float32")
    return PlaneLayout(None, None, None, budget) if data_dtype == "float32" else None


def roi_align_plane_te(
    data: te.Tensor,
    rois: te.Tensor,
    pooled: tuple[int, int],
    spatial_scale: float,
    max_mode: bool,
    sample_ratio: int,
    aligned: bool,
    threads: int,
    layout: PlaneLayout,
    unroll: int = 2,
    parts: tuple[str, ...] = ("load", "pool"),
) -> te.Tensor:
    """(R, C, pooled_h, pooled_w) of data (N, C, H, W) pooled over rois (R, 5), ONNX's definition (spatial scale
    already applied to the rois, as opforge's registry entry does). `parts` leaves out the plane's loads or the
    pooling, for scripts/roialign_anatomy.py to time each alone (the result is then not RoiAlign's)."""
    ph, pw = pooled
    out_shape = (rois.shape[0], data.shape[1], ph, pw)
    return te.extern(
        [out_shape],
        [data, rois],
        lambda ins, outs: _plane_ir(
            ins[0],
            ins[1],
            outs[0],
            (ph, pw),
            spatial_scale,
            max_mode,
            sample_ratio,
            aligned,
            threads,
            layout,
            unroll,
            parts,
        ),
        dtype=[data.dtype],
        name="roi_align_plane",
    )


def _plane_ir(data_buf, rois_buf, out_buf, pooled, scale, max_mode, ratio, aligned, threads, layout, unroll, parts):
    # Imported here: roi_align imports this module to dispatch to it.
    from opforge.lower.kernels.roi_align import axis_point, box_geometry

    gpu = on_gpu()
    n_img, channels, height, width = data_buf.shape
    num_roi = rois_buf.shape[0]
    ph_n, pw_n = pooled
    per_box = ph_n * pw_n
    adaptive = ratio <= 0  # a grid per box, as large as its bins (ONNX's sampling_ratio 0)
    y_lines, x_lines = (0, 0) if adaptive else (ph_n * ratio, pw_n * ratio)
    lines = y_lines + x_lines
    table_words = GEOMETRY_WORDS if adaptive else lines * 2  # per box
    vt = str(data_buf.dtype)
    itemsize = tvm.DataType(vt).bits // 8
    ct = "float32"
    idt = index_dtype(
        n_img, num_roi, n_img * channels * height * width, num_roi * channels * per_box, num_roi * table_words
    )

    def ix(e):
        return as_index(e, idt)

    h, w, c = ix(height), ix(width), ix(channels)
    wp = w + 1
    lanes = vec_lanes(vt) if static(width) is not None and static(width) % vec_lanes(vt) == 0 else 1
    n_out = ix(num_roi) * per_box
    symbolic = layout.band_rows is None

    with IRBuilder() as ib, T.seq_scope():
        data = T.buffer_proxy(T.decl_buffer([n_img * channels * height * width], vt, data=data_buf.data))
        rois = T.buffer_proxy(T.decl_buffer([num_roi * 5], str(rois_buf.dtype), data=rois_buf.data))
        out = T.buffer_proxy(T.decl_buffer([num_roi * channels * per_box], vt, data=out_buf.data))
        # The boxes' sampling lines (workspace), two words per line: the clamped low line (-1 outside the map) and
        # the fraction's bits, so that an output reads its lines on an axis in one or two wide loads; for an
        # adaptive grid, each box's geometry (_geometry_table).
        table = T.buffer_proxy(T.alloc_buffer([num_roi * table_words], "int32"))
        if symbolic:  # bands of equal height, as many as the budget needs, decided when the plugin runs
            most_rows = T.Bind(tirx.max(ix(layout.budget // itemsize) // wp - 1, ix(1)))
            bands = T.Bind(tirx.max((h + most_rows - 1) // most_rows, ix(1)))
            band_rows = T.Bind((h + bands - 1) // bands)
        else:
            bands, band_rows = layout.bands, ix(layout.band_rows)

        if adaptive:
            _geometry_table(table, rois, num_roi, (ph_n, pw_n), scale, aligned, (threads, idt, ct, gpu))
        else:
            # Kernel 1: the tables, one thread per box and line, in small blocks (a few thousand threads, each a chain
            # of dependent loads and divisions: spread over every SM).
            with kernel_ir.each_index(ix(num_roi) * lines, min(threads, TABLE_THREADS), idt, gpu) as e:
                box = T.Bind(e // lines)
                line = T.Bind(tirx.Cast("int32", e % lines))
                roi = [rois[box * 5 + k] for k in range(5)]
                _n, start_h, start_w, bin_h, bin_w, grid_h, grid_w = box_geometry(
                    roi, ct, (ph_n, pw_n), ratio, aligned, gpu, scale
                )
                on_y = line < y_lines
                k = T.Bind(tirx.Select(on_y, line, line - y_lines))
                point = T.Bind(
                    tirx.Select(
                        on_y,
                        axis_point(start_h, bin_h, k // ratio, k % ratio, grid_h, ct, gpu),
                        axis_point(start_w, bin_w, k // ratio, k % ratio, grid_w, ct, gpu),
                    )
                )
                extent = T.Bind(tirx.Select(on_y, tirx.Cast("int32", h), tirx.Cast("int32", w)))
                outside = tirx.Or(point < tirx.const(-1.0, ct), point > tirx.Cast(ct, extent))
                clamped = T.Bind(tirx.min(tirx.max(point, tirx.const(0.0, ct)), tirx.Cast(ct, extent - 1)))
                lo = T.Bind(tirx.Cast("int32", clamped))
                table[e * 2] = tirx.Select(outside, tirx.const(-1, "int32"), lo)
                table[e * 2 + 1] = tirx.reinterpret("int32", clamped - tirx.Cast(ct, lo))

        # Kernel 2: a block per (image, channel).
        with kernel_ir.blocks(tirx.Cast("int32", ix(n_img) * c), threads, gpu) as (block, tx):
            scope = "shared.dyn" if gpu else "global"
            plane = T.buffer_proxy(T.decl_buffer([(band_rows + 1) * wp], vt, scope=scope))
            image = T.Bind(ix(block) // c)
            channel = T.Bind(ix(block) % c)
            src = T.Bind(ix(block) * (h * w))

            def band_pass(band, multi: bool) -> None:
                """Pool every output from the rows of band `band` (an int, or the loop variable of bands decided
                when the kernel runs): r0 .. r0 + band_rows, plus the padding row."""
                r0 = band * band_rows
                if not isinstance(band, int) or band > 0:
                    kernel_ir.block_barrier(gpu)  # every read of the previous band is done
                # 1. The rows (the last one clamped to the map), 16-byte loads along each row where the width
                #    allows, LOADS_IN_FLIGHT per thread issued before their stores; then the padding column.
                per_row = w // lanes
                items = (band_rows + 1) * per_row if "load" in parts else ix(0)
                with _each_round(items, threads, LOADS_IN_FLIGHT, tx, idt, gpu) as ps:
                    staged = []
                    for p in ps:
                        pc = T.Bind(tirx.min(p, items - 1))
                        row, col = T.Bind(pc // per_row), T.Bind((pc % per_row) * lanes)
                        at = T.Bind(src + tirx.min(row + r0, h - 1) * w + col)
                        vals = T.buffer_proxy(T.decl_buffer([lanes], vt, scope="local"))
                        with T.vectorized(0, lanes) as v:
                            vals[v] = data[at + v]
                        staged.append((p, row * wp + col, vals))
                    for p, dst, vals in staged:
                        with T.If(p < items), T.Then():
                            for v in range(lanes):
                                plane[dst + v] = vals[v]
                pads = tirx.Select(w > 0, band_rows + 1, ix(0)) if "load" in parts else ix(0)
                with _each_round(pads, threads, 1, tx, idt, gpu) as (r,), T.If(r < pads), T.Then():
                    plane[r * wp + w] = data[src + tirx.min(r + r0, h - 1) * w + (w - 1)]
                kernel_ir.block_barrier(gpu)
                # 2. Every output of the image's boxes, consecutive threads on consecutive output columns; each
                #    thread `unroll` outputs at a time, whose table and batch loads are all issued before any
                #    sampling (they come from L2: one round trip for all of them).
                with _each_round(n_out if "pool" in parts else ix(0), threads, unroll, tx, idt, gpu) as outputs:
                    if adaptive:
                        loaded = [_load_grid(table, o, (per_box, pw_n, h, w), idt, n_out, gpu) for o in outputs]
                    else:
                        loaded = [
                            _load_lines(table, rois, o, (per_box, pw_n, ratio, y_lines, lines), idt, n_out)
                            for o in outputs
                        ]
                    for o, (batch, q, box, points) in zip(outputs, loaded):
                        with T.If(tirx.And(o < n_out, batch == image)), T.Then():
                            _pool(
                                plane,
                                out,
                                points,
                                q,
                                box,
                                channel,
                                (band, band_rows, multi),
                                (wp, c, per_box, idt, ct, "float32", vt),
                                max_mode,
                            )

            if symbolic:
                with T.serial(0, bands) as band:
                    band_pass(band, True)
            else:
                for band in range(bands):
                    band_pass(band, bands > 1)
    return ib.get()


@contextlib.contextmanager
def _each_round(n, threads: int, unroll: int, tx, idt: str, gpu: bool):
    """Rounds of `unroll` output indices per thread over [0, n) (a dimension expression), shared by a block's
    threads: round r gives thread tx the indices (r * unroll + u) * threads + tx. Indices may pass n (the caller
    clamps its loads and guards its stores). On the CPU a serial loop, one index per round."""
    if not gpu:
        with T.serial(0, n) as o:
            yield [o]
        return
    step = threads * unroll
    with T.serial(0, (n + step - 1) // step) as r:
        base = T.Bind(r * step + as_index(tx, idt))
        yield [T.Bind(base + u * threads) for u in range(unroll)]


def _load_lines(table, rois, o, dims, idt: str, n):
    """Output o's image index, position in its box, box, and its sampling lines (_Lines): (low, fraction) of each y
    line and each x line. Loads at a clamped index, so that they need no branch; an axis's lines are consecutive in
    the table, read 16 bytes (two lines) at a time where the sampling ratio is even (the offsets are then multiples
    of 4 words), else 8."""
    per_box, pw_n, ratio, y_lines, lines = dims
    oc = T.Bind(tirx.min(o, n - 1))
    box = T.Bind(oc // per_box)
    q = T.Bind(tirx.Cast("int32", oc % per_box))
    oy, ox = q // pw_n, q % pw_n
    row0 = box * lines
    batch = T.Bind(tirx.Cast(idt, tirx.Cast("int32", rois[box * 5])))
    width = 4 if ratio % 2 == 0 else 2

    def axis(first):
        words = T.buffer_proxy(T.decl_buffer([2 * ratio], "int32", scope="local"))
        at = T.Bind((row0 + as_index(first, idt)) * 2)
        for k in range(0, 2 * ratio, width):
            with T.vectorized(0, width) as v:
                words[k + v] = table[at + k + v]
        return [(T.Bind(words[2 * r]), T.Bind(tirx.reinterpret("float32", words[2 * r + 1]))) for r in range(ratio)]

    return batch, q, box, _Lines(axis(oy * ratio), axis(y_lines + ox * ratio))


def _geometry_table(table, rois, num_roi, pooled, scale, aligned, env) -> None:
    """Kernel 1 for an adaptive grid: each box's geometry (start_h, start_w, bin_h, bin_w as float bits, grid_h,
    grid_w, batch index, 0: GEOMETRY_WORDS words), one thread per box, computed once instead of once per output and
    channel."""
    from opforge.lower.kernels.roi_align import box_geometry

    threads, idt, ct, gpu = env
    with kernel_ir.each_index(as_index(num_roi, idt), min(threads, TABLE_THREADS), idt, gpu) as b:
        roi = [rois[b * 5 + k] for k in range(5)]
        batch, start_h, start_w, bin_h, bin_w, grid_h, grid_w = box_geometry(roi, ct, pooled, 0, aligned, gpu, scale)
        at = b * GEOMETRY_WORDS
        for k, value in enumerate((start_h, start_w, bin_h, bin_w)):
            table[at + k] = tirx.reinterpret("int32", value)
        for k, value in enumerate((grid_h, grid_w, batch, tirx.const(0, "int32")), start=4):
            table[at + k] = tirx.Cast("int32", value)


def _load_grid(table, o, dims, idt: str, n, gpu: bool):
    """Output o's image index, position in its box, box, and its sampling grid (_Grid), from its box's geometry in
    the table (two 16-byte loads)."""
    per_box, pw_n, height, width = dims
    oc = T.Bind(tirx.min(o, n - 1))
    box = T.Bind(oc // per_box)
    q = T.Bind(tirx.Cast("int32", oc % per_box))
    words = T.buffer_proxy(T.decl_buffer([GEOMETRY_WORDS], "int32", scope="local"))
    at = T.Bind(box * GEOMETRY_WORDS)
    for k in range(0, GEOMETRY_WORDS, 4):
        with T.vectorized(0, 4) as v:
            words[k + v] = table[at + k + v]
    floats = [T.Bind(tirx.reinterpret("float32", words[k])) for k in range(4)]
    grid_h, grid_w, batch = (T.Bind(words[k]) for k in (4, 5, 6))
    geometry = (*floats, grid_h, grid_w)
    return tirx.Cast(idt, batch), q, box, _Grid(geometry, q // pw_n, q % pw_n, (height, width), gpu)


@dataclass(frozen=True)
class _Lines:
    """An output's sampling lines for a fixed ratio: (low line, fraction) on each axis, a low line of -1 where the
    line is off the map."""

    ys: list
    xs: list

    def count(self):
        return tirx.const(float(len(self.ys) * len(self.xs)), "float32")

    def low_rows(self, idt: str):
        """(lowest low row on the map or 2**30, highest low row or -1) of the output's y lines."""
        above = tirx.const(2**30, idt)  # above any row: a line off the map (-1) takes no part in the lowest
        lows = [tirx.Cast(idt, y_low) for y_low, _ in self.ys]
        lowest = tirx.Select(lows[0] >= 0, lows[0], above)
        highest = lows[0]
        for low in lows[1:]:
            lowest = tirx.min(lowest, tirx.Select(low >= 0, low, above))
            highest = tirx.max(highest, low)
        return lowest, highest

    def accumulate(self, plane, band, dims, max_mode):
        """The sum (or max) of the output's sampling points (those whose low row is in `band`, (r0, rows), when
        given)."""
        acc_t = dims[3]
        acc = T.buffer_proxy(T.decl_buffer([1], acc_t, scope="local"))
        acc[0] = tirx.const(float("-inf") if max_mode else 0.0, acc_t)
        for y_low, ly in self.ys:
            for x_low, lx in self.xs:
                _add_point(acc, plane, (y_low, ly), (x_low, lx), band, dims, max_mode)
        return acc[0]


@dataclass(frozen=True)
class _Grid:
    """An output's adaptive sampling grid (ONNX's sampling_ratio 0): grid_h x grid_w points whose coordinates are
    computed as the thread-per-output kernel computes them (roi_align.axis_point), from its box's geometry."""

    geometry: tuple  # start_h, start_w, bin_h, bin_w, grid_h, grid_w
    oy: object
    ox: object
    extents: tuple  # the map's height and width
    gpu: bool

    def count(self):
        grid_h, grid_w = self.geometry[4:]
        return tirx.Cast("float32", tirx.max(grid_h * grid_w, 1))

    def _line(self, axis: int, k):
        """(low line, fraction) of the grid's k-th line on `axis` (0: y, 1: x), low -1 off the map."""
        from opforge.lower.kernels.roi_align import axis_point

        ct = "float32"
        start, size, grid = self.geometry[axis], self.geometry[2 + axis], self.geometry[4 + axis]
        # Float values live in a local buffer, not in bound variables: TVM's integer-set analysis of a bound value
        # that casts the grid's loop variable to float fails (IntImm of a float type).
        f = T.buffer_proxy(T.decl_buffer([2], ct, scope="local"))
        f[0] = axis_point(start, size, (self.oy, self.ox)[axis], k, grid, ct, self.gpu)
        extent = tirx.Cast("int32", self.extents[axis])
        outside = T.Bind(tirx.Or(f[0] < tirx.const(-1.0, ct), f[0] > tirx.Cast(ct, extent)))
        f[1] = tirx.min(tirx.max(f[0], tirx.const(0.0, ct)), tirx.Cast(ct, extent - 1))
        lo = T.Bind(tirx.Cast("int32", f[1]))
        f[1] = f[1] - tirx.Cast(ct, lo)
        return T.Bind(tirx.Select(outside, tirx.const(-1, "int32"), lo)), f[1]

    def low_rows(self, idt: str):
        span = T.buffer_proxy(T.decl_buffer([2], idt, scope="local"))
        span[0], span[1] = tirx.const(2**30, idt), tirx.const(-1, idt)
        with T.serial(0, self.geometry[4]) as iy:
            low = tirx.Cast(idt, self._line(0, iy)[0])
            span[0] = tirx.min(span[0], tirx.Select(low >= 0, low, tirx.const(2**30, idt)))
            span[1] = tirx.max(span[1], low)
        return span[0], span[1]

    def accumulate(self, plane, band, dims, max_mode):
        acc_t = dims[3]
        acc = T.buffer_proxy(T.decl_buffer([1], acc_t, scope="local"))
        acc[0] = tirx.const(float("-inf") if max_mode else 0.0, acc_t)
        with T.serial(0, self.geometry[4]) as iy:
            y = self._line(0, iy)
            with T.serial(0, self.geometry[5]) as ix:
                _add_point(acc, plane, y, self._line(1, ix), band, dims, max_mode)
        if not max_mode:
            return acc[0]
        grid_h, grid_w = self.geometry[4:]
        return tirx.Select(grid_h * grid_w > 0, acc[0], tirx.const(0.0, acc_t))  # an empty bin is 0 in max mode too


def _pool(plane, out, points, q, box, channel, band, dims, max_mode):
    """One output's sum (or max) over its sampling points in this band. With bands, an output is pooled only in
    the bands holding the low rows of its sampling lines (band 0 alone when none is on the map): the first of them
    writes it, later ones combine with what the earlier wrote, the last divides by the count; in the other bands it
    is neither read nor written, so an output within one band costs one write, as without bands."""
    band_index, band_rows, multi = band
    wp, channels, per_box, idt, ct, acc_t, vt = dims
    dst = T.Bind((tirx.Cast(idt, box) * channels + channel) * per_box + tirx.Cast(idt, q))
    count = points.count()
    if not multi:
        value = points.accumulate(plane, None, (wp, idt, ct, acc_t), max_mode)
        out[dst] = tirx.Cast(vt, value if max_mode else value / count)
        return
    band_index = as_index(band_index, idt)
    lowest, highest = points.low_rows(idt)
    first = T.Bind(tirx.Select(highest >= 0, lowest // band_rows, as_index(0, idt)))
    last = T.Bind(tirx.Select(highest >= 0, highest // band_rows, as_index(0, idt)))
    with T.If(tirx.And(band_index >= first, band_index <= last)), T.Then():
        r0 = band_index * band_rows
        value = points.accumulate(plane, (r0, band_rows), (wp, idt, ct, acc_t), max_mode)
        total = T.buffer_proxy(T.decl_buffer([1], acc_t, scope="local"))
        with T.If(band_index == first):
            with T.Then():
                total[0] = value
            with T.Else():  # earlier bands' partial result, kept in the output (float32)
                total[0] = tirx.max(out[dst], value) if max_mode else out[dst] + value
        if not max_mode:
            with T.If(band_index == last), T.Then():
                total[0] = total[0] / count
        out[dst] = tirx.Cast(vt, total[0])


def _add_point(acc, plane, y, x, band, dims, max_mode) -> None:
    """Add one sampling point (its y and x lines: low line, -1 off the map, and fraction) to acc[0] (the max in
    max mode), w1*v1 + w2*v2 + w3*v3 + w4*v4 as ONNX's reference computes it; only where its low row is in `band`,
    (r0, rows), when given."""
    wp, idt, ct, acc_t = dims
    one = tirx.const(1.0, ct)
    (y_low, ly), (x_low, lx) = y, x
    hy, hx = one - ly, one - lx
    inside = tirx.And(y_low >= 0, x_low >= 0)
    row = tirx.Cast(idt, y_low)
    if band is not None:  # a point belongs to the band holding its low row
        r0, band_rows = band
        row = row - r0
        inside = tirx.And(inside, tirx.And(row >= 0, row < band_rows))
    base = T.Bind(tirx.Select(inside, row * wp + tirx.Cast(idt, x_low), tirx.Cast(idt, 0)))

    def v(offset):
        return tirx.Cast(acc_t, plane[base + offset])

    def w(a, b):
        return tirx.Cast(acc_t, a * b)

    terms = [w(hy, hx) * v(0), w(hy, lx) * v(1), w(ly, hx) * v(wp), w(ly, lx) * v(wp + 1)]
    if max_mode:
        value = tirx.max(tirx.max(terms[0], terms[1]), tirx.max(terms[2], terms[3]))
        # A point outside the map counts as 0 (in every band that pools the output: a max takes it as often as it
        # comes).
        empty = tirx.Select(tirx.Or(y_low < 0, x_low < 0), tirx.const(0.0, acc_t), tirx.const(float("-inf"), acc_t))
        acc[0] = tirx.max(acc[0], tirx.Select(inside, value, empty))
    else:
        value = terms[0] + terms[1] + terms[2] + terms[3]
        acc[0] = acc[0] + tirx.Select(inside, value, tirx.const(0.0, acc_t))
