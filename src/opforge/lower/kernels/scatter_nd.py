"""opforge's ScatterND lowering: parallel over every element of every update slice.

TVM 0.27's GPU ScatterND gives one thread per element of a slice and loops over all index tuples in series (to keep
a defined order for duplicate indices), so 19200 slices of 256 elements run in one block: milliseconds where the
copy alone takes microseconds. ONNX leaves the result of duplicate indices undefined for reduction="none", and
"add" is order-free up to rounding, so here both kernels are fully parallel:

  1. out = data, `vec` elements per thread (one 16-byte load and store);
  2. one thread per `vec` elements of each update slice: reads the slice's index tuple (negative indices wrap),
     stores (update) or atomically adds (add; fp16 in __half2 pairs).

mul/min/max keep TVM's serial kernel: CUDA has no float atomics for them.
"""

from __future__ import annotations

import tvm
from tvm import relax, te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from opforge.lower.kernels.kernel_ir import as_index, copy_vectorized, each_index, index_dtype, prod, static, vec_lanes

PARALLEL_MODES = ("update", "add")
# A device helper (lower/kernels/__init__.py DEVICE_HELPERS) the plan's source defines: atomicAdd on a __half2.
HALF2_ATOMIC_ADD = "opf_atomic_add_half2"


def scatter_nd_te(
    data: te.Tensor, indices: te.Tensor, updates: te.Tensor, k: int, mode: str, threads: int
) -> te.Tensor:
    """`k`: the (static) length of an index tuple, indices' last dim."""
    # Buffers without an element offset: contiguous, aligned tensors, so the copy can be one 16-byte access.
    ins = [tirx.decl_buffer(t.shape, t.dtype, t.op.name) for t in (data, indices, updates)]
    out_buf = tirx.decl_buffer(data.shape, data.dtype, "out_buf")
    return te.extern(
        [data.shape],
        [data, indices, updates],
        lambda ins, outs: _scatter_ir(ins[0], ins[1], ins[2], outs[0], k, mode, threads),
        dtype=data.dtype,
        in_buffers=ins,
        out_buffers=[out_buf],
        name="scatter_nd_parallel",
        tag="scatter_nd_parallel",
    )


def _scatter_ir(data_buf, idx_buf, upd_buf, out_buf, k: int, mode: str, threads: int):
    n_out = prod(data_buf.shape)
    n_idx = prod(idx_buf.shape[:-1])
    slice_len = prod(data_buf.shape[k:])
    idt = index_dtype(n_out, n_idx * slice_len)
    lanes = vec_lanes(data_buf.dtype)
    data, idx = T.buffer_proxy(data_buf), T.buffer_proxy(idx_buf)
    upd, out = T.buffer_proxy(upd_buf), T.buffer_proxy(out_buf)

    def c(e):
        return as_index(e, idt)

    with IRBuilder() as ib:
        with T.seq_scope():
            # 1. out = data
            copy_vectorized(out, data, n_out, lanes, threads, idt)
            # 2. the slices
            s_static = static(slice_len)
            sv = lanes if s_static is not None and s_static % lanes == 0 else 1
            per_slice = c(slice_len) // sv
            with each_index(c(n_idx) * per_slice, threads, idt) as t:
                i = t // per_slice
                j = (t % per_slice) * sv
                offset = tirx.const(0, idt)
                for axis in range(k):
                    dim = c(data_buf.shape[axis])
                    raw = c(idx[i * k + axis])
                    offset = offset * dim + tirx.Select(raw < 0, raw + dim, raw)
                dst = T.Bind(offset * c(slice_len) + j)
                src = T.Bind(i * c(slice_len) + j)
                if mode == "update":
                    with T.vectorized(0, sv) as v:
                        out[dst + v] = upd[src + v]
                elif str(data_buf.dtype) == "float16" and sv % 2 == 0:
                    # Packed: one 32-bit atomic per two halves (dst is even, so 4-byte aligned), half the
                    # atomics of the scalar form, and 32-bit ones, which the L2 serves faster than 16-bit ones.
                    with T.unroll(0, sv // 2) as v:
                        addr = tirx.call_intrin("handle", "tirx.address_of", out[dst + 2 * v])
                        pair = (upd[src + 2 * v], upd[src + 2 * v + 1])
                        T.evaluate(tirx.call_extern("void", HALF2_ATOMIC_ADD, addr, *pair))
                else:
                    with T.unroll(0, sv) as v:
                        addr = tirx.call_intrin("handle", "tirx.address_of", out[dst + v])
                        T.evaluate(tirx.call_intrin(data_buf.dtype, "tirx.cuda.atomic_add", addr, upd[src + v]))
        return ib.get()


def legalize(threads: int):
    """A LegalizeOps override for relax.scatter_nd; mul/min/max go to TVM's own legalization."""
    default = tvm.ir.Op.get("relax.scatter_nd").get_attr("FLegalize")

    def f(bb, call):
        mode = str(call.attrs.reduction)
        idx_shape = relax.get_shape_of(call.args[1])
        k = static(idx_shape[-1]) if idx_shape is not None else None
        if mode not in PARALLEL_MODES or k is None:
            return default(bb, call)
        return bb.call_te(scatter_nd_te, call.args[0], call.args[1], call.args[2], k, mode, threads)

    return f


def override(threads: int, config=None):
    """The op registry's entry point (opforge.ops.scatter_nd)."""
    return legalize(threads)
