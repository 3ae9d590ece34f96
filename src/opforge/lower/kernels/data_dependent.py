"""Kernels of ONNX ops whose output extent depends on the input values: NonZero, Unique, Compress (run-time
condition).

Each kernel writes its outputs densely for their real shapes (as TensorRT expects of an output whose shape holds a
size tensor), into buffers allocated at an upper bound, and writes the real extent into a 0-d int32 size tensor on
the device: no host synchronisation. The ONNX converters (opforge.lower.tvm_converters) emit one such kernel per
node and mark each data-dependent output with `bounded`, a call of the packed function BOUNDED(tensor, size, axis);
opforge.lower.tvm_lower turns that mark into the plan's size tensors (opforge.core.kernel_plan.SizeTensor), and
opforge.lower.cpu_run registers BOUNDED to trim the tensor when TVM runs the graph on the CPU.

Speed: correctness first. NonZero and Compress count per chunk of CHUNK elements (one thread each), scan the
chunk counts on one thread (serial over N / CHUNK entries) and write per chunk, so their serial depth is about
2 * CHUNK + N / CHUNK; Compress then copies one output element per thread. Unique runs one thread per slice (M
slices of S elements: O(M * S) per thread for the first occurrence and the sorted rank, plus one thread counting
the M first occurrences). NonMaxSuppression runs one thread per (batch, class), each visiting its boxes best-first in
O(N^2), which gives ONNX's order without a sort: fine for a few hundred boxes, slow for many thousands.
On the CPU (llvm) the same loops run without the thread binding.
"""

from __future__ import annotations

import contextlib

import tvm
from tvm import relax, te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from opforge.lower.tir_text import dtype_of

# The packed function that marks a data-dependent output: BOUNDED(tensor, size tensor, axis).
BOUNDED = "opforge.bounded"
# TensorRT's size tensors are 0-d INT32 (IPluginV3OneBuild::getOutputDataTypes, NvInferRuntime.h 10.14 and 11.1).
SIZE_DTYPE = "int32"
IDX = "int64"


def on_gpu() -> bool:
    """Whether the kernels are being made for CUDA (the lowering imports under a CUDA target) or for the CPU."""
    target = tvm.target.Target.current(allow_none=True)
    return target is not None and target.kind.name == "cuda"


def bounded(bb: relax.BlockBuilder, tensor: relax.Expr, size: relax.Expr, axis: int) -> relax.Expr:
    """`tensor` (allocated at an upper bound on `axis`) whose real extent on `axis` is the value of `size`."""
    ty = tensor.ty
    return bb.emit(
        relax.op.call_pure_packed(
            BOUNDED, tensor, size, relax.ShapeExpr([axis]), ty_args=relax.TensorType(ndim=ty.ndim, dtype=ty.dtype)
        )
    )


def _i64(e):
    return tirx.const(e, IDX) if isinstance(e, int) else (tirx.Cast(IDX, e) if dtype_of(e) != IDX else e)


def _numel(shape) -> tirx.PrimExpr:
    n = _i64(1)
    for d in shape:
        n = n * _i64(d)
    return n


@contextlib.contextmanager
def _one_thread():
    """The kernel's body: inside one CUDA block of one thread on the GPU, plain code on the CPU."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(T.seq_scope())
        if on_gpu():
            bx, tx = te.thread_axis("blockIdx.x"), te.thread_axis("threadIdx.x")
            stack.enter_context(T.attr(bx, "thread_extent", 1))
            stack.enter_context(T.attr(tx, "thread_extent", 1))
        yield


def _counter():
    """A local int64 scalar (a one-element local buffer): read it as c[0], write it with _set."""
    return T.alloc_buffer((1,), IDX, scope="local")


def _set(buf, value, index=0) -> None:
    T.buffer_store(buf, value, [index])


def _view(buf) -> tirx.Buffer:
    """A flat view of a dense buffer: the kernels compute element offsets themselves."""
    return T.decl_buffer([_numel(buf.shape)], buf.dtype, data=buf.data)


def _flat(t: te.Tensor, name: str) -> tirx.Buffer:
    """A dense input buffer (no element offset), viewed flat in the kernel."""
    return tirx.decl_buffer(t.shape, t.dtype, name)


def _nonzero(value, dtype: str):
    """Whether an element is non-zero (a bool element is its own truth value)."""
    return value if dtype == "bool" else value != tirx.const(0, dtype)


# --- NonZero and Compress: chunked count, scan, write --------------------------------------------------------

# Elements per thread in the counting and writing passes, and threads per block.
CHUNK = 256
BLOCK = 256


@contextlib.contextmanager
def _threads(n):
    """One kernel launch of `n` threads (ceil(n / BLOCK) blocks) on the GPU, a loop on the CPU; yields the
    thread's index (int64); threads past `n` do nothing."""
    n = _i64(n)
    with contextlib.ExitStack() as stack:
        if on_gpu():
            bx, tx = te.thread_axis("blockIdx.x"), te.thread_axis("threadIdx.x")
            blocks = tirx.Cast("int32", (n + _i64(BLOCK - 1)) // _i64(BLOCK))
            stack.enter_context(T.attr(bx, "thread_extent", blocks))
            stack.enter_context(T.attr(tx, "thread_extent", BLOCK))
            t = T.Bind(_i64(bx) * _i64(BLOCK) + _i64(tx))
        else:
            t = stack.enter_context(T.serial(_i64(0), n))
        stack.enter_context(T.If(t < n))
        stack.enter_context(T.Then())
        yield t


def _chunks(n):
    return (_i64(n) + _i64(CHUNK - 1)) // _i64(CHUNK)


def _count_and_scan(src_b, flag, n, cnt_b, off_b, size_b) -> None:
    """Kernels 1 and 2: per chunk of CHUNK elements of `src_b`, the number of elements `v` where `flag(v)` holds
    (one thread per chunk), then one thread turns the counts into each chunk's first output position and writes
    the total into the size tensor."""
    chunks = _chunks(n)
    with _threads(chunks) as t:
        src, cnt = _view(src_b), _view(cnt_b)
        k = _counter()
        _set(k, _i64(0))
        first, stop = t * _i64(CHUNK), tirx.min((t + _i64(1)) * _i64(CHUNK), _i64(n))
        with T.serial(first, stop) as i, T.If(flag(src[i])), T.Then():
            _set(k, k[0] + _i64(1))
        _set(cnt, k[0], t)
    _scan_counts(chunks, cnt_b, off_b, size_b)


def _scan_counts(groups, cnt_b, off_b, size_b) -> None:
    """One thread: each group's offset, the exclusive prefix sum of the groups' counts, and their total as the
    size tensor."""
    with _one_thread():
        cnt, off, size = _view(cnt_b), _view(off_b), _view(size_b)
        run = _counter()
        _set(run, _i64(0))
        with T.serial(_i64(0), groups) as g:
            _set(off, run[0], g)
            _set(run, run[0] + cnt[g])
        _set(size, tirx.Cast(SIZE_DTYPE, run[0]))


def nonzero_te(x: te.Tensor) -> list[te.Tensor]:
    """ONNX NonZero: (indices [rank, K] int64, K, and per-chunk scratch) with K the number of non-zero elements,
    indices allocated [rank, numel] and written densely as [rank, K], coordinates in row-major element order.
    Three kernels: per-chunk counts (one thread per CHUNK elements), a one-thread scan over the chunks, per-chunk
    writes; the scan is serial over numel / CHUNK entries."""
    rank = len(x.shape)
    n = _numel(x.shape)
    bufs = [
        tirx.decl_buffer((rank, n), IDX, "indices"),
        tirx.decl_buffer((), SIZE_DTYPE, "size"),
        tirx.decl_buffer((_chunks(n),), IDX, "chunk_count"),
        tirx.decl_buffer((_chunks(n),), IDX, "chunk_offset"),
    ]
    return te.extern(
        [b.shape for b in bufs],
        [x],
        lambda ins, outs: _nonzero_ir(ins[0], *outs),
        dtype=[str(b.dtype) for b in bufs],
        in_buffers=[_flat(x, "x")],
        out_buffers=bufs,
        name="opf_nonzero",
        tag="opf_nonzero",
    )


def _nonzero_ir(x_buf, out_buf, size_buf, cnt_buf, off_buf):
    shape = list(x_buf.shape)
    n = _numel(shape)
    dtype = str(x_buf.dtype)
    with IRBuilder() as ib:
        with T.seq_scope():
            _count_and_scan(x_buf, lambda v: _nonzero(v, dtype), n, cnt_buf, off_buf, size_buf)
            with _threads(_chunks(n)) as t:
                x, out, size, off = _view(x_buf), _view(out_buf), _view(size_buf), _view(off_buf)
                total = T.Bind(_i64(size[0]))
                k = _counter()
                _set(k, off[t])
                first, stop = t * _i64(CHUNK), tirx.min((t + _i64(1)) * _i64(CHUNK), n)
                with T.serial(first, stop) as i, T.If(_nonzero(x[i], dtype)), T.Then():
                    rest = i
                    for d in reversed(range(len(shape))):
                        _set(out, tirx.floormod(rest, _i64(shape[d])), _i64(d) * total + k[0])
                        rest = tirx.floordiv(rest, _i64(shape[d]))
                    _set(k, k[0] + _i64(1))
        return ib.get()


def _split(shape, axis: int):
    """(pre, extent, post): the products of the dims before `axis`, the axis, the dims after it."""
    return _numel(shape[:axis]), _i64(shape[axis]), _numel(shape[axis + 1 :])


def compress_shape(shape, cond_len, axis: int | None) -> list:
    """The allocated (upper-bound) shape of Compress's output: the selectable positions on the axis."""
    if axis is None:
        return [tirx.min(_numel(shape), _i64(cond_len))]
    out = list(shape)
    out[axis] = tirx.min(_i64(shape[axis]), _i64(cond_len))
    return out


def compress_te(x: te.Tensor, cond: te.Tensor, axis: int | None) -> list[te.Tensor]:
    """ONNX Compress with a run-time condition: (output, K, and scratch) with K the number of true conditions among
    the positions the axis has (`axis` None: of the flattened input). Four kernels: per-chunk counts of the
    condition, a one-thread scan over the chunks, per-chunk lists of the selected positions, then one thread per
    output element of the allocation (those past K do nothing)."""
    shape = compress_shape(x.shape, cond.shape[0], axis)
    limit = shape[0 if axis is None else axis]
    bufs = [
        tirx.decl_buffer(shape, x.dtype, "selected"),
        tirx.decl_buffer((), SIZE_DTYPE, "size"),
        tirx.decl_buffer((_chunks(limit),), IDX, "chunk_count"),
        tirx.decl_buffer((_chunks(limit),), IDX, "chunk_offset"),
        tirx.decl_buffer((limit,), IDX, "positions"),  # the selected positions, in order
    ]
    return te.extern(
        [b.shape for b in bufs],
        [x, cond],
        lambda ins, outs: _compress_ir(ins[0], ins[1], *outs, axis=axis),
        dtype=[str(b.dtype) for b in bufs],
        in_buffers=[_flat(x, "x"), _flat(cond, "condition")],
        out_buffers=bufs,
        name="opf_compress",
        tag="opf_compress",
    )


def _compress_ir(x_buf, cond_buf, out_buf, size_buf, cnt_buf, off_buf, pos_buf, axis: int | None):
    shape = [_numel(x_buf.shape)] if axis is None else list(x_buf.shape)
    pre, extent, post = _split(shape, 0 if axis is None else axis)
    limit = tirx.min(extent, _i64(cond_buf.shape[0]))
    with IRBuilder() as ib:
        with T.seq_scope():
            _count_and_scan(cond_buf, lambda v: v, limit, cnt_buf, off_buf, size_buf)
            with _threads(_chunks(limit)) as t:
                cond, off, pos = _view(cond_buf), _view(off_buf), _view(pos_buf)
                k = _counter()
                _set(k, off[t])
                first, stop = t * _i64(CHUNK), tirx.min((t + _i64(1)) * _i64(CHUNK), limit)
                with T.serial(first, stop) as c, T.If(cond[c]), T.Then():
                    _set(pos, c, k[0])
                    _set(k, k[0] + _i64(1))
            with _threads(pre * limit * post) as e:
                x, out, size, pos = _view(x_buf), _view(out_buf), _view(size_buf), _view(pos_buf)
                total = T.Bind(_i64(size[0]))
                p, rest = e // (limit * post), e % (limit * post)
                k, q = rest // post, rest % post
                with T.If(k < total), T.Then():
                    _set(out, x[(p * extent + pos[k]) * post + q], (p * total + k) * post + q)
        return ib.get()


# --- Unique -------------------------------------------------------------------------------------------------


def unique_te(x: te.Tensor, axis: int | None, sorted_: bool) -> list[te.Tensor]:
    """ONNX Unique: (Y, indices, inverse_indices, counts, K, and two scratch arrays). The input is seen as M slices
    along `axis` (None: M = numel single elements); K of them are distinct. Y is allocated at the input's shape
    (flattened when axis is None) and written densely with K on the axis; indices and counts are allocated [M] and
    hold K entries; inverse_indices is [M]. sorted_: slices in ascending lexicographic order, else in order of
    first occurrence."""
    shape = [_numel(x.shape)] if axis is None else list(x.shape)
    m = shape[0 if axis is None else axis]
    bufs = [
        tirx.decl_buffer(shape, x.dtype, "Y"),
        tirx.decl_buffer((m,), IDX, "indices"),
        tirx.decl_buffer((m,), IDX, "inverse_indices"),
        tirx.decl_buffer((m,), IDX, "counts"),
        tirx.decl_buffer((), SIZE_DTYPE, "size"),
        tirx.decl_buffer((m,), IDX, "first"),  # scratch: the first slice equal to each slice
        tirx.decl_buffer((m,), IDX, "rank"),  # scratch: each slice's position in Y
    ]
    return te.extern(
        [b.shape for b in bufs],
        [x],
        lambda ins, outs: _unique_ir(ins[0], *outs, axis=axis, sorted_=sorted_),
        dtype=[str(b.dtype) for b in bufs],
        in_buffers=[_flat(x, "x")],
        out_buffers=bufs,
        name="opf_unique",
        tag="opf_unique",
    )


def _unique_ir(x_buf, y_buf, idx_buf, inv_buf, cnt_buf, size_buf, first_buf, rank_buf, axis, sorted_):
    """Four kernels: (1) per slice i, first[i] = the smallest j <= i whose slice equals it; (2) sorted: per distinct
    slice, its rank = the number of distinct slices less than it; (3) one thread: K into the size tensor, and for
    first-occurrence order each distinct slice's rank as a running count; (4) per slice: inverse_indices, and per
    distinct slice its index, count and copy into Y."""
    shape = [_numel(x_buf.shape)] if axis is None else list(x_buf.shape)
    pre, m, post = _split(shape, 0 if axis is None else axis)
    s_len = pre * post

    def comparer(x):
        """compare(i, j): the lexicographic order of slice i against slice j (-1, 0, 1) into a local scalar."""
        state = _counter()

        def elem(i, s):
            # Element s of slice i (s runs over the slice in row-major order of the other axes).
            return x[((s // post) * m + i) * post + s % post]

        def compare(i, j):
            _set(state, _i64(0))
            with T.serial(_i64(0), s_len) as s:
                a, b = elem(i, s), elem(j, s)
                with T.If(state[0] == _i64(0)), T.Then():
                    _set(state, tirx.Select(a < b, _i64(-1), tirx.Select(b < a, _i64(1), _i64(0))))
            return state[0]

        return compare

    with IRBuilder() as ib:
        with T.seq_scope():
            with _threads(m) as i:
                x, first = _view(x_buf), _view(first_buf)
                compare = comparer(x)
                _set(first, i, i)
                with T.serial(_i64(0), i) as j, T.If(first[i] == i), T.Then():
                    order = compare(j, i)
                    with T.If(order == _i64(0)), T.Then():
                        _set(first, j, i)
            if sorted_:
                with _threads(m) as i:
                    x, first, rank = _view(x_buf), _view(first_buf), _view(rank_buf)
                    compare = comparer(x)
                    with T.If(first[i] == i), T.Then():
                        _set(rank, _i64(0), i)
                        with T.serial(_i64(0), m) as j, T.If(first[j] == j), T.Then():
                            order = compare(j, i)
                            with T.If(order < _i64(0)), T.Then():
                                _set(rank, rank[i] + _i64(1), i)
            with _one_thread():
                first, rank, size = _view(first_buf), _view(rank_buf), _view(size_buf)
                k = _counter()
                _set(k, _i64(0))
                with T.serial(_i64(0), m) as i, T.If(first[i] == i), T.Then():
                    if not sorted_:
                        _set(rank, k[0], i)
                    _set(k, k[0] + _i64(1))
                _set(size, tirx.Cast(SIZE_DTYPE, k[0]))
            with _threads(m) as i:
                x, y, idx, inv, cnt, size, first, rank = (
                    _view(b) for b in (x_buf, y_buf, idx_buf, inv_buf, cnt_buf, size_buf, first_buf, rank_buf)
                )
                total = T.Bind(_i64(size[0]))
                r = T.Bind(rank[first[i]])
                _set(inv, r, i)
                with T.If(first[i] == i), T.Then():
                    _set(idx, i, r)
                    c = _counter()
                    _set(c, _i64(0))
                    with T.serial(i, m) as j, T.If(first[j] == i), T.Then():
                        _set(c, c[0] + _i64(1))
                    _set(cnt, c[0], r)
                    with T.serial(_i64(0), pre) as p, T.serial(_i64(0), post) as q:
                        _set(y, x[(p * m + i) * post + q], (p * total + r) * post + q)
        return ib.get()


# --- NonMaxSuppression -----------------------------------------------------------------------------------------


def nms_te(
    boxes: te.Tensor,
    scores: te.Tensor,
    iou: te.Tensor | None,
    score: te.Tensor | None,
    max_per_class: int,
    center_point_box: bool,
) -> list[te.Tensor]:
    """ONNX NonMaxSuppression: (selected_indices [K, 3] int64, K, and scratch arrays). Per batch and class,
    the boxes whose score exceeds score_threshold (all boxes without one) are taken in descending score order (ties:
    lower box index first), and each is kept unless its IoU with a box kept before exceeds iou_threshold, up to
    `max_per_class` boxes; rows are (batch, class, box) in batch, class, then selection order. Allocated at
    batches * classes * min(boxes, max_per_class) rows. The thresholds are run-time [1] tensors or absent.
    Three kernels: one thread per (batch, class) selects its boxes into scratch (O(N^2)); one thread turns the
    per-class counts into row offsets and K; one thread per (batch, class) writes its rows."""
    n_batch, n_class, n_box = scores.shape
    per_class = tirx.min(_i64(n_box), _i64(max_per_class))
    bufs = [
        tirx.decl_buffer((_i64(n_batch) * _i64(n_class) * per_class, 3), IDX, "selected_indices"),
        tirx.decl_buffer((), SIZE_DTYPE, "size"),
        # scratch, per (batch, class): 1 where a box was visited or is under the score threshold; the boxes kept;
        # how many; the first output row.
        tirx.decl_buffer((_i64(n_batch) * _i64(n_class) * _i64(n_box),), IDX, "taken"),
        tirx.decl_buffer((_i64(n_batch) * _i64(n_class) * _i64(n_box),), IDX, "kept"),
        tirx.decl_buffer((_i64(n_batch) * _i64(n_class),), IDX, "class_count"),
        tirx.decl_buffer((_i64(n_batch) * _i64(n_class),), IDX, "class_offset"),
    ]
    ins = [t for t in (boxes, scores, iou, score) if t is not None]
    in_bufs = [_flat(t, name) for t, name in zip(ins, ("boxes", "scores", "iou", "score"))]

    def body(i, o):
        it = iter(i)
        b, s = next(it), next(it)
        iou_b = next(it) if iou is not None else None
        score_b = next(it) if score is not None else None
        return _nms_ir(b, s, iou_b, score_b, *o, max_per_class=max_per_class, center=center_point_box)

    return te.extern(
        [x.shape for x in bufs],
        ins,
        body,
        dtype=[str(x.dtype) for x in bufs],
        in_buffers=in_bufs,
        out_buffers=bufs,
        name="opf_nms",
        tag="opf_nms",
    )


def _corners(bx, i, center: bool):
    """Box i as (x_min, x_max, y_min, y_max) in float32, as ONNX's reference reads both box formats."""
    v = [tirx.Cast("float32", bx[i * _i64(4) + _i64(k)]) for k in range(4)]
    if center:
        half = tirx.const(0.5, "float32")
        return v[0] - v[2] * half, v[0] + v[2] * half, v[1] - v[3] * half, v[1] + v[3] * half
    return tirx.min(v[1], v[3]), tirx.max(v[1], v[3]), tirx.min(v[0], v[2]), tirx.max(v[0], v[2])


def _suppresses(bx, i, j, threshold, center: bool):
    """Whether boxes i and j overlap with an IoU above `threshold` (ONNX's reference, float32)."""
    ax0, ax1, ay0, ay1 = _corners(bx, i, center)
    bx0, bx1, by0, by1 = _corners(bx, j, center)
    ix0, ix1 = tirx.max(ax0, bx0), tirx.min(ax1, bx1)
    iy0, iy1 = tirx.max(ay0, by0), tirx.min(ay1, by1)
    zero = tirx.const(0.0, "float32")
    inter = (ix1 - ix0) * (iy1 - iy0)
    area_a, area_b = (ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0)
    union = area_a + area_b - inter
    safe = tirx.Select(union > zero, union, tirx.const(1.0, "float32"))
    return tirx.all(
        ix1 > ix0, iy1 > iy0, inter > zero, area_a > zero, area_b > zero, union > zero, inter / safe > threshold
    )


def _nms_ir(
    boxes_b, scores_b, iou_b, score_b, out_b, size_b, taken_b, kept_b, cnt_b, off_b, max_per_class: int, center: bool
):
    n_batch, n_class, n_box = (_i64(d) for d in scores_b.shape)
    limit = tirx.min(n_box, _i64(max_per_class))
    pairs = n_batch * n_class
    with IRBuilder() as ib:
        with T.seq_scope():
            with _threads(pairs) as pc:
                bx, sc, taken, kept, cnt = (_view(b) for b in (boxes_b, scores_b, taken_b, kept_b, cnt_b))
                iou_t = tirx.Cast("float32", _view(iou_b)[0]) if iou_b is not None else tirx.const(0.0, "float32")
                score_t = tirx.Cast("float32", _view(score_b)[0]) if score_b is not None else None
                n_kept, best, hit = _counter(), _counter(), _counter()
                b = T.Bind(pc // n_class)
                base = T.Bind(pc * n_box)  # this class's scores, taken and kept
                with T.serial(_i64(0), n_box) as i:  # candidates: over the score threshold
                    if score_t is not None:
                        over = tirx.Cast("float32", sc[base + i]) > score_t
                        _set(taken, tirx.Select(over, _i64(0), _i64(1)), base + i)
                    else:
                        _set(taken, _i64(0), base + i)
                _set(n_kept, _i64(0))
                # Visit candidates best-first (the first of equal scores first); stop at max_per_class kept.
                with T.serial(_i64(0), n_box):
                    _set(best, _i64(-1))
                    with T.serial(_i64(0), n_box) as i:
                        better = tirx.any(
                            best[0] < _i64(0),
                            tirx.Cast("float32", sc[base + i])
                            > tirx.Cast("float32", sc[base + tirx.max(best[0], _i64(0))]),
                        )
                        with T.If(tirx.all(taken[base + i] == _i64(0), better)), T.Then():
                            _set(best, i)
                    with T.If(tirx.all(best[0] >= _i64(0), n_kept[0] < limit)), T.Then():
                        cand = T.Bind(best[0])
                        _set(taken, _i64(1), base + cand)
                        _set(hit, _i64(0))
                        with T.serial(_i64(0), n_kept[0]) as k:
                            box_b = b * n_box
                            with T.If(_suppresses(bx, box_b + cand, box_b + kept[base + k], iou_t, center)), T.Then():
                                _set(hit, _i64(1))
                        with T.If(hit[0] == _i64(0)), T.Then():
                            _set(kept, cand, base + n_kept[0])
                            _set(n_kept, n_kept[0] + _i64(1))
                _set(cnt, n_kept[0], pc)
            _scan_counts(pairs, cnt_b, off_b, size_b)
            with _threads(pairs) as pc:
                out, kept, cnt, off = _view(out_b), _view(kept_b), _view(cnt_b), _view(off_b)
                with T.serial(_i64(0), cnt[pc]) as k:
                    row = T.Bind((off[pc] + k) * _i64(3))
                    _set(out, pc // n_class, row)
                    _set(out, pc % n_class, row + _i64(1))
                    _set(out, kept[pc * n_box + k], row + _i64(2))
        return ib.get()
