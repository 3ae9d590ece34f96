"""opforge's ScatterElements lowering (reduction "none" and "add"): parallel over every update element.

TVM 0.27's ScatterElements legalization visits the updates in one serial loop (to keep a defined order for
duplicate targets): 4M updates took 2.6 ms on the H100 where the copy alone takes 0.1 ms. ONNX leaves the result of
duplicate indices undefined for reduction="none", and "add" is order-free up to rounding, so both kernels here are
fully parallel:

  1. out = data, 16 bytes per thread;
  2. one thread per update element: its coordinates in `indices`' shape, the coordinate along `axis` replaced by
     its index (a negative one wraps), give the target's offset in `data`; it stores (none) or adds atomically.

mul/min/max keep TVM's serial kernel: CUDA has no float atomics for them. On the CPU (llvm, the semantic check)
the same loops run serially.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from opforge.lower.kernels.data_dependent import on_gpu
from opforge.lower.kernels.kernel_ir import as_index, copy_vectorized, each_index, index_dtype, prod, vec_lanes

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


def _scatter_ir(data_buf, idx_buf, upd_buf, out_buf, axis: int, mode: str, threads: int):
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
