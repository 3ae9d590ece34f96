"""opforge's Resize lowering for NCHW 2-D nearest and linear resizes of static shape.

TVM's resize computes every output element on its own: the source coordinate in float from the element's
(n, c, y, x), then the taps. That is most of the work for an op that only writes memory, and fp16 linear reached 35%
of the copy bandwidth on the H100. Here one kernel does:

  1. per block, a table over the output width in shared memory, stored lane-major (column x at
     (x % vec) * (width / vec) + x / vec) so that the threads of a warp, which read columns `vec` apart, hit
     consecutive banks instead of `vec`-way conflicts;
  2. per thread, `vec` adjacent outputs (16 bytes) in each of `rows` consecutive rows of a plane (the tuned
     per_thread): what depends on the columns only is read from the table once for all rows;
  3. per row, the source row(s) and weight once, then one 16-byte store when the width is a multiple of `vec`.

Nearest loads one input element per output. Linear, when upsampling, reuses columns: a thread's `vec` outputs touch
only a few source columns (`chunk_taps`), so per row it loads that window from both source rows once and blends it
vertically into v[0..taps). The table holds, per output, e = r + w: its first tap's offset r in the window and the
second tap's weight w. Output = v[0] + sum_q sat(e - q) * (v[q+1] - v[q]), since sat(e - q) is 1 below r, w at r
and 0 above: per tap one saturating add and one FMA, with no register indexing, selects or integer work. Per output
that is about 2·taps/vec global loads instead of 4 (and 3 table reads), which bound the kernel. Downscales, whose
chunks span many columns, load the four taps of each output.

Coordinates follow ONNX: x_in = f(x_out, scale) with scale = out / in in float32, divided rather than multiplied by
its inverse, so half-way points of nearest rounding land where ONNX's reference puts them. Cubic, crop-and-resize,
other layouts and symbolic shapes keep TVM's lowering.
"""

from __future__ import annotations

import math

import tvm
from tvm import te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from opforge.lower.kernels.kernel_ir import as_index, block_barrier, index_dtype, static, vec_lanes

METHODS = ("nearest_neighbor", "linear")
COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
ROUNDING = ("round", "round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "")
# The width table lives in shared memory: at most 12 bytes per output column.
MAX_TABLE_WIDTH = 4096
# Column reuse costs taps - 1 saturating adds and FMAs per output: it pays while the window stays short.
MAX_CHUNK_TAPS = 6


def source_coordinate(x, in_len: int, out_len: int, mode: str):
    """ONNX's coordinate transformation, float32, for output index x (an int32 expression)."""
    xf = tirx.Cast("float32", x)
    scale = tirx.const(float(out_len), "float32") / tirx.const(float(in_len), "float32")
    half = tirx.const(0.5, "float32")
    if mode == "align_corners":
        if out_len == 1:
            return tirx.const(0.0, "float32")
        return xf * tirx.const(float(in_len - 1), "float32") / tirx.const(float(out_len - 1), "float32")
    if mode == "asymmetric":
        return xf / scale
    if mode == "tf_half_pixel_for_nn":
        return (xf + half) / scale
    if mode == "pytorch_half_pixel" and out_len == 1:
        return tirx.const(0.0, "float32")
    return (xf + half) / scale - half


def _nearest(x_in, in_len: int, rounding: str):
    half = tirx.const(0.5, "float32")
    if rounding in ("round_prefer_floor", ""):
        r = tirx.ceil(x_in - half)
    elif rounding == "round_prefer_ceil":
        r = tirx.floor(x_in + half)
    elif rounding == "floor":
        r = tirx.floor(x_in)
    elif rounding == "ceil":
        r = tirx.ceil(x_in)
    else:
        r = tirx.round(x_in)
    return tirx.max(tirx.min(tirx.Cast("int32", r), in_len - 1), 0)


def _linear(x_in, in_len: int):
    """(first tap, second tap, weight of the second): taps clamped to the edge, as ONNX's edge padding does."""
    lo = tirx.floor(x_in)
    i0 = tirx.Cast("int32", lo)
    clamp = lambda i: tirx.max(tirx.min(i, in_len - 1), 0)  # noqa: E731
    return clamp(i0), clamp(i0 + 1), x_in - lo


def _edge_tap(x_in, in_len: int):
    """(first tap clamped to the input, weight of the second): the weight is 0 where both taps clamp to one column,
    so that the second tap may then be read as the next column without changing the result."""
    lo = tirx.floor(x_in)
    i0 = tirx.Cast("int32", lo)
    inside = tirx.all(i0 >= 0, i0 < in_len - 1)
    return tirx.max(tirx.min(i0, in_len - 1), 0), tirx.Select(inside, x_in - lo, tirx.const(0.0, "float32"))


def chunk_taps(in_len: int, out_len: int, mode: str, vec: int) -> int:
    """An upper bound on the source columns that `vec` adjacent outputs of linear resize read: both taps of each.

    Every mode maps x affinely with slope a, so the first taps of a chunk span at most ceil(a·(vec-1)) columns in
    exact arithmetic; the float32 coordinate is off by far less than `eps`, which is added on both ends."""
    slope = (in_len - 1) / max(out_len - 1, 1) if mode == "align_corners" else in_len / out_len
    eps = 1e-5 * (in_len + 2)
    return math.ceil(slope * (vec - 1) + 2 * eps) + 2


def chunk_entry(j, vec: int, taps: int, in_len: int, out_len: int, mode: str):
    """Column reuse's table entry for output column j: (the first column of its chunk's window, r + w), where r is
    the offset of j's first tap in the window (a non-negative integer: coordinates grow with x) and w its weight.

    The window is `taps` columns from the chunk's first tap, moved left to end at the last input column where it
    would run past it: taps stay in it (by chunk_taps) and the kernel loads it without clamping each column."""
    i0, w = _edge_tap(source_coordinate(j, in_len, out_len, mode), in_len)
    start, _ = _edge_tap(source_coordinate(j - j % vec, in_len, out_len, mode), in_len)
    if in_len >= taps:
        start = tirx.min(start, in_len - taps)
    return start, tirx.Cast("float32", i0 - start) + w


def _load(buf, index):
    """buf[index] in float32, bound once: TVM inlines bound arithmetic into every use, which nvcc merges again,
    but a half's conversion is inline assembly it repeats."""
    return T.Bind(tirx.Cast("float32", buf[index]))


def _lerp(p, q, w):
    p, q = tirx.Cast("float32", p), tirx.Cast("float32", q)
    return p + w * (q - p)


def _saturate(e):
    """Clamped to [0, 1]: a free modifier of the float add that computes `e` on NVIDIA GPUs."""
    return tirx.call_pure_extern("float32", "__saturatef", e)


def rows_per_thread(out_h: int, wanted: int) -> int:
    """The largest power of two up to `wanted` that divides the output height, so a thread's rows share a plane."""
    rows = 1
    while rows * 2 <= wanted and out_h % (rows * 2) == 0:
        rows *= 2
    return rows


def supported(shape, out_size, attrs) -> bool:
    dims = [static(d) for d in [*shape, *out_size]]
    return (
        str(attrs.layout) == "NCHW"
        and str(attrs.method) in METHODS
        and str(attrs.coordinate_transformation_mode) in COORDINATE_MODES
        and str(attrs.rounding_method) in ROUNDING
        and len(shape) == 4
        and all(d is not None and d > 0 for d in dims)
        and dims[-1] <= MAX_TABLE_WIDTH  # the output width
    )


def resize_te(
    data: te.Tensor,
    out_hw: tuple[int, int],
    method: str,
    mode: str,
    rounding: str,
    out_dtype: str,
    threads: int,
    rows: int,
) -> te.Tensor:
    shape = [*data.shape[:2], *out_hw]
    in_buf = tirx.decl_buffer(data.shape, data.dtype, "data_buf")
    out_buf = tirx.decl_buffer(shape, out_dtype, "out_buf")
    return te.extern(
        [shape],
        [data],
        lambda ins, outs: _resize_ir(ins[0], outs[0], method, mode, rounding, threads, rows),
        dtype=out_dtype,
        in_buffers=[in_buf],
        out_buffers=[out_buf],
        name="resize2d_rows",
        tag="resize2d_rows",
    )


def _resize_ir(data_buf, out_buf, method: str, mode: str, rounding: str, threads: int, rows: int):
    n, c, ih, iw = (int(d) for d in data_buf.shape)
    oh, ow = (int(d) for d in out_buf.shape[2:])
    lanes = min(vec_lanes(out_buf.dtype), vec_lanes(data_buf.dtype))
    vec = lanes if ow % lanes == 0 else 1
    per_row = ow // vec
    rows = rows_per_thread(oh, rows)
    groups = n * c * oh // rows
    idt = index_dtype(n * c * ih * iw, n * c * oh * ow)
    linear = method == "linear"
    taps = chunk_taps(iw, ow, mode, vec) if linear else 0
    reuse = linear and taps <= MAX_CHUNK_TAPS and taps < 2 * vec  # fewer loads than 4 per output

    def c_(e):
        return as_index(e, idt)

    with IRBuilder() as ib:
        bx, tx = te.thread_axis("blockIdx.x"), te.thread_axis("threadIdx.x")
        blocks = (groups * per_row + threads - 1) // threads
        frames = [
            T.attr(tirx.const(0), "hand_threaded", 0),
            T.attr(bx, "thread_extent", blocks),
            T.attr(tx, "thread_extent", threads),
        ]
        with T.frame_scope(frames):
            # Flat views: the kernel computes element offsets itself.
            data = T.decl_buffer([n * c * ih * iw], data_buf.dtype, data=data_buf.data)
            out = T.decl_buffer([n * c * oh * ow], out_buf.dtype, data=out_buf.data)
            # 1. The width table, shared by every row the block touches.
            if reuse:
                entry = T.decl_buffer([ow], "float32", scope="shared")
                window = T.decl_buffer([per_row], "int32", scope="shared")  # each chunk's first column
            else:
                col0 = T.decl_buffer([ow], "int32", scope="shared")
                col1 = T.decl_buffer([ow], "int32", scope="shared") if linear else None
                wcol = T.decl_buffer([ow], "float32", scope="shared") if linear else None
            with T.serial(0, (ow + threads - 1) // threads) as r:
                j = r * threads + tx
                with T.If(j < ow), T.Then():
                    slot = (j % vec) * per_row + j // vec
                    if reuse:
                        start, rw = chunk_entry(j, vec, taps, iw, ow, mode)
                        T.buffer_store(entry, rw, [slot])
                        with T.If(j % vec == 0), T.Then():
                            T.buffer_store(window, start, [j // vec])
                    elif linear:
                        i0, i1, w = _linear(source_coordinate(j, iw, ow, mode), iw)
                        T.buffer_store(col0, i0, [slot])
                        T.buffer_store(col1, i1, [slot])
                        T.buffer_store(wcol, w, [slot])
                    else:
                        T.buffer_store(col0, _nearest(source_coordinate(j, iw, ow, mode), iw, rounding), [slot])
            block_barrier()

            # 2. Per thread, `vec` adjacent outputs in each of `rows` consecutive rows of one plane: what depends on
            #    the columns only (table reads, tap weights) is read once for all of them.
            t = T.Bind(c_(bx) * threads + c_(tx))
            with T.If(t < groups * per_row), T.Then():
                group = T.Bind(t // per_row)
                k = T.Bind(tirx.Cast("int32", t % per_row))
                plane = T.Bind((group * rows // oh) * (ih * iw))
                oy0 = T.Bind(tirx.Cast("int32", group * rows % oh))
                dst0 = T.Bind(group * (rows * ow) + c_(k * vec))
                slots = [i * per_row + k for i in range(vec)]  # the table slots of the thread's columns
                if reuse:
                    c0 = T.Bind(c_(window[k]))
                    # Only an input narrower than the window repeats its last column.
                    cols = [c0 + q if iw >= taps else T.Bind(tirx.min(c0 + q, iw - 1)) for q in range(taps)]
                    # Output i = v[0] + sum_q sat(entry_i - q) * (v[q+1] - v[q]): the columns at offset
                    # r = floor(entry_i) blended by its fraction, without indexing registers.
                    sat = [[T.Bind(_saturate(entry[x] - float(q))) for q in range(taps - 1)] for x in slots]
                elif linear:
                    cols = [(T.Bind(c_(col0[x])), T.Bind(c_(col1[x])), T.Bind(wcol[x])) for x in slots]
                else:
                    cols = [T.Bind(c_(col0[x])) for x in slots]
                acc = T.decl_buffer([vec], out_buf.dtype, scope="local")
                for dy in range(rows):
                    y_in = source_coordinate(oy0 + dy, ih, oh, mode)
                    if linear:
                        y0, y1, wy = _linear(y_in, ih)
                        top = T.Bind(plane + c_(y0) * iw)
                        bot = T.Bind(plane + c_(y1) * iw)
                        wy = T.Bind(wy)
                    if reuse:
                        # The window's columns blended vertically.
                        v = [T.Bind(_lerp(_load(data, top + x), _load(data, bot + x), wy)) for x in cols]
                        d = [T.Bind(v[q + 1] - v[q]) for q in range(taps - 1)]
                        for i in range(vec):
                            value = v[0]
                            for q in range(taps - 1):
                                value = value + sat[i][q] * d[q]
                            T.buffer_store(acc, tirx.Cast(out_buf.dtype, value), [i])
                    elif linear:
                        for i, (a, b, w) in enumerate(cols):
                            upper = T.Bind(_lerp(_load(data, top + a), _load(data, top + b), w))
                            lower = T.Bind(_lerp(_load(data, bot + a), _load(data, bot + b), w))
                            T.buffer_store(acc, tirx.Cast(out_buf.dtype, _lerp(upper, lower, wy)), [i])
                    else:
                        src = T.Bind(plane + c_(_nearest(y_in, ih, rounding)) * iw)
                        for i, x in enumerate(cols):
                            T.buffer_store(acc, tirx.Cast(out_buf.dtype, data[src + x]), [i])
                    dst = T.Bind(dst0 + dy * ow)
                    with T.vectorized(0, vec) as i:
                        T.buffer_store(out, acc[i], [dst + i])
        return ib.get()


def legalize(threads: int, rows: int = 1):
    """A LegalizeOps override for relax.image.resize2d; what `supported` rejects goes to TVM's own legalization.
    `rows`: output rows per thread (a power of two that divides the output height, at most this)."""
    default = tvm.ir.Op.get("relax.image.resize2d").get_attr("FLegalize")

    def f(bb, call):
        data, size = call.args[0], call.args[1]
        shape = data.ty.shape if data.ty.shape is not None else []
        out_size = list(size.values) if hasattr(size, "values") else []
        if len(out_size) != 2 or not supported(list(shape), out_size, call.attrs):
            return default(bb, call)
        out_dtype = str(call.attrs.out_dtype or "")
        if out_dtype in ("", "void", "None"):
            out_dtype = str(data.ty.dtype)
        return bb.call_te(
            resize_te,
            data,
            (int(out_size[0]), int(out_size[1])),
            str(call.attrs.method),
            str(call.attrs.coordinate_transformation_mode),
            str(call.attrs.rounding_method),
            out_dtype,
            threads,
            rows,
            primfunc_name_hint="resize2d",
        )

    return f


def override(threads: int, config=None):
    """The op registry's entry point (opforge.ops.resize): rows per thread follow the tuned elements per thread."""
    return legalize(threads, config.per_thread if config else 1)
