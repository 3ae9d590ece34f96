"""opforge's ScatterElements lowering (reduction "none" and "add"): parallel over every update element.

TVM 0.27's ScatterElements legalization visits the updates in one serial loop (to keep a defined order for
duplicate targets): 4M updates took 2.6 ms on the H100 where the copy alone takes 0.1 ms. ONNX leaves the result of
duplicate indices undefined for reduction="none", and "add" is order-free up to rounding, so the kernels here are
fully parallel.

An update moves only along `axis`: it lands in the fiber of `data` (all positions along `axis`, the other
coordinates fixed) that its own coordinates name. Where `indices` spans data's other dimensions and a few fibers
fit in shared memory, one launch does it all, a block per tile of fibers (`fiber_tile`):

  - the block loads its fibers into shared memory, scatters their updates there (shared atomics for "add"), and
    writes them out: every byte of data, indices, updates and output crosses DRAM once (two launches re-read and
    re-write a scattered output that has left the L2 in between: 45% of the roofline at 4096x4096, 1024 per row).

Otherwise, two launches:

  1. out = data, 16 bytes per thread;
  2. one thread per update element: its coordinates in `indices`' shape, the coordinate along `axis` replaced by
     its index (a negative one wraps), give the target's offset in `data`; it stores (none) or adds atomically.

mul/min/max keep TVM's serial kernel: CUDA has no float atomics for them. On the CPU (llvm, the semantic check)
the same loops run serially.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from opforge.lower.kernels.data_dependent import on_gpu
from opforge.lower.kernels.kernel_ir import (
    as_index,
    block_barrier,
    block_items,
    blocks,
    copy_vectorized,
    each_index,
    index_dtype,
    prod,
    static,
    vec_lanes,
)

PARALLEL_MODES = ("update", "add")
# Element types CUDA's atomicAdd takes on sm_90 as TVM spells them (no 8/16-bit or signed 64-bit integer atomics;
# TVM's uint64_t is unsigned long, not atomicAdd's unsigned long long): "add" on others keeps TVM's serial kernel.
ATOMIC_ADD_DTYPES = ("float16", "bfloat16", "float32", "float64", "int32", "uint32")


def scatter_elements_te(
    data: te.Tensor, indices: te.Tensor, updates: te.Tensor, axis: int, mode: str, threads: int
) -> te.Tensor:
    """`axis`: non-negative, < data's rank; indices and updates have one shape (the schema's rule)."""
    ins = [tirx.decl_buffer(t.shape, t.dtype, t.op.name) for t in (data, indices, updates)]
    out_buf = tirx.decl_buffer(data.shape, data.dtype, "out_buf")
    return te.extern(
        [data.shape],
        [data, indices, updates],
        lambda ins, outs: _scatter_ir(ins[0], ins[1], ins[2], outs[0], axis, mode, threads),
        dtype=data.dtype,
        in_buffers=ins,
        out_buffers=[out_buf],
        name="scatter_elements_parallel",
        tag="scatter_elements_parallel",
    )


TILE_BYTES = 48 * 1024  # shared memory for one block's fibers (CUDA's default static limit)
MAX_FIBERS = 32  # fibers per tile where data has dimensions after `axis` (consecutive fibers are adjacent there)


def fiber_tile(data_shape, idx_shape, axis: int, dtype: str) -> int:
    """Fibers per block of the one-launch kernel, or 0 where it does not apply (a symbolic dimension, `indices`
    narrower than data off `axis`, or a fiber longer than TILE_BYTES)."""
    dims, idims = [static(d) for d in data_shape], [static(d) for d in idx_shape]
    if any(d is None for d in dims + idims) or any(dims[a] != idims[a] for a in range(len(dims)) if a != axis):
        return 0
    fiber_bytes = dims[axis] * tvm.DataType(dtype).bits // 8
    if fiber_bytes == 0 or fiber_bytes > TILE_BYTES or int(np.prod(dims)) >= 2**31:
        return 0
    inner = int(np.prod(dims[axis + 1 :]))
    fibers = 1
    while 2 * fibers * fiber_bytes <= TILE_BYTES and (inner == 1 or 2 * fibers <= MAX_FIBERS):
        fibers *= 2
    return fibers


def _scatter_tiles_ir(data_buf, idx_buf, upd_buf, out_buf, axis: int, mode: str, threads: int, fibers: int):
    """The one-launch kernel (module docstring): block b owns fibers [b * fibers, (b + 1) * fibers)."""
    dims = [int(d) for d in data_buf.shape]
    outer, length, inner = int(np.prod(dims[:axis])), dims[axis], int(np.prod(dims[axis + 1 :]))
    taken = int(idx_buf.shape[axis])
    total = outer * inner  # fibers
    dtype = str(data_buf.dtype)
    gpu = on_gpu()
    flat = [outer * length * inner, outer * taken * inner]

    def split(e, extent: int):
        """Tile slot e of a [fibers, extent] tile as (fiber, position): where fibers are rows (inner == 1) the
        position runs fastest (rows are contiguous), else the fiber does (adjacent fibers are)."""
        return (e // extent, e % extent) if inner == 1 else (e % fibers, e // fibers)

    def offset(g, pos, extent: int):
        """The flat offset of position `pos` of fiber g in a tensor whose `axis` extent is `extent`."""
        return (g // inner) * (extent * inner) + pos * inner + g % inner

    with IRBuilder() as ib, T.seq_scope():
        data = T.buffer_proxy(T.decl_buffer([flat[0]], dtype, data=data_buf.data))
        out = T.buffer_proxy(T.decl_buffer([flat[0]], dtype, data=out_buf.data))
        idx = T.buffer_proxy(T.decl_buffer([flat[1]], str(idx_buf.dtype), data=idx_buf.data))
        upd = T.buffer_proxy(T.decl_buffer([flat[1]], dtype, data=upd_buf.data))

        with blocks(-(-total // fibers), threads, gpu) as (b, tx):
            tile = T.buffer_proxy(T.decl_buffer([fibers * length], dtype, scope="shared" if gpu else "global"))
            with block_items(fibers * length, threads, tx, gpu) as e:
                f, pos = split(e, length)
                g = T.Bind(b * fibers + f)
                with T.If(g < total), T.Then():
                    tile[e] = data[offset(g, pos, length)]
            block_barrier(gpu)
            with block_items(fibers * taken, threads, tx, gpu) as e:
                f, j = split(e, taken)
                g = T.Bind(b * fibers + f)
                with T.If(g < total), T.Then():
                    at = T.Bind(offset(g, j, taken))
                    raw = T.Bind(tirx.Cast("int32", idx[at]))
                    pos = T.Bind(tirx.Select(raw < 0, raw + length, raw))
                    slot = T.Bind(pos * fibers + f if inner != 1 else f * length + pos)
                    inside = tirx.And(pos >= 0, pos < length)  # ONNX's valid range; others must not corrupt
                    with T.If(inside), T.Then():
                        if mode == "update":
                            tile[slot] = upd[at]
                        elif gpu:
                            addr = tirx.call_intrin("handle", "tirx.address_of", tile[slot])
                            T.evaluate(tirx.call_intrin(dtype, "tirx.cuda.atomic_add", addr, upd[at]))
                        else:
                            tile[slot] = tile[slot] + upd[at]
            block_barrier(gpu)
            with block_items(fibers * length, threads, tx, gpu) as e:
                f, pos = split(e, length)
                g = T.Bind(b * fibers + f)
                with T.If(g < total), T.Then():
                    out[offset(g, pos, length)] = tile[e]
    return ib.get()


def _scatter_ir(data_buf, idx_buf, upd_buf, out_buf, axis: int, mode: str, threads: int):
    fibers = fiber_tile(data_buf.shape, idx_buf.shape, axis, str(data_buf.dtype))
    if fibers:
        return _scatter_tiles_ir(data_buf, idx_buf, upd_buf, out_buf, axis, mode, threads, fibers)
    n_out = prod(data_buf.shape)
    n_upd = prod(idx_buf.shape)
    idt = index_dtype(n_out, n_upd)
    lanes = vec_lanes(data_buf.dtype)
    data, idx = T.buffer_proxy(data_buf), T.buffer_proxy(idx_buf)
    upd, out = T.buffer_proxy(upd_buf), T.buffer_proxy(out_buf)

    def c(e):
        return as_index(e, idt)

    gpu = on_gpu()

    def each(n):
        return each_index(n, threads, idt, gpu)

    with IRBuilder() as ib:
        with T.seq_scope():
            # 1. out = data
            copy_vectorized(out, data, n_out, lanes, threads, idt, gpu)
            # 2. the updates
            with each(c(n_upd)) as t:
                rest = t
                offset = tirx.const(0, idt)
                stride = tirx.const(1, idt)
                for ax in reversed(range(len(data_buf.shape))):
                    extent = c(idx_buf.shape[ax])
                    coord = rest % extent
                    rest = rest // extent
                    if ax == axis:
                        dim = c(data_buf.shape[ax])
                        raw = c(idx[t])
                        coord = tirx.Select(raw < 0, raw + dim, raw)
                    offset = offset + coord * stride
                    stride = stride * c(data_buf.shape[ax])
                dst = T.Bind(offset)
                if mode == "update":
                    out[dst] = upd[t]
                elif gpu:
                    addr = tirx.call_intrin("handle", "tirx.address_of", out[dst])
                    T.evaluate(tirx.call_intrin(data_buf.dtype, "tirx.cuda.atomic_add", addr, upd[t]))
                else:
                    out[dst] = out[dst] + upd[t]
        return ib.get()


def legalize(threads: int):
    """A LegalizeOps override for relax.scatter_elements; mul/min/max go to TVM's own legalization."""
    default = tvm.ir.Op.get("relax.scatter_elements").get_attr("FLegalize")

    def f(bb, call):
        mode = str(call.attrs.reduction)
        shape = relax.get_shape_of(call.args[0])
        rank = len(shape) if shape is not None else None
        dtype = str(call.args[0].ty.dtype)
        if mode not in PARALLEL_MODES or not rank or (mode == "add" and dtype not in ATOMIC_ADD_DTYPES):
            return default(bb, call)
        axis = int(call.attrs.axis) % rank
        return bb.call_te(scatter_elements_te, call.args[0], call.args[1], call.args[2], axis, mode, threads)

    return f


def override(threads: int, config=None):
    """The op registry's entry point (opforge.ops.gather's ScatterElements rule)."""
    return legalize(threads)
