"""opforge's TopK along the last axis: bitonic sorts in shared memory, a row cut into chunks.

TVM 0.27's GPU TopK sorts every row in full with its merge sort (one launch per merge level): 673 µs on the H100
for 64 rows of 32768 where torch takes 79 µs. Here, for k <= MAX_K:

  1. one block per (row, chunk of CHUNK elements) sorts its chunk in shared memory with a bitonic network and keeps
     its best k (value, index) pairs;
  2. one block per row sorts the chunks' chunks * k candidates (at most MERGE elements) the same way and writes the
     best k.

A row of at most CHUNK elements is one launch. "Best" is ONNX's order: the larger value first (the smaller with
largest=0), and of equal values the lower index first; padding slots hold the worst value and the largest index, so
they lose every comparison (a real -inf included). The output is sorted whether `sorted` is 1 or 0 (any order is
allowed then).

Every step of the network is a loop over compare-exchange pairs that the block's threads share, with a barrier
between steps; on the CPU (llvm, the semantic check) the same steps run as serial loops, so the network itself is
what the check runs.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tvm
from tvm import te, tirx
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder import tirx as T

from opforge.lower.kernels.data_dependent import on_gpu
from opforge.lower.kernels.kernel_ir import prod

CHUNK = 2048  # elements a block sorts in step 1
MERGE = 4096  # candidates a block sorts in step 2
MAX_K = 1024
THREADS = 1024
LAST_INDEX = 2**31 - 1  # the index of a padding slot


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def plan(n: int, k: int) -> tuple[int, int, int]:
    """(slots a block of step 1 sorts, chunks per row, slots of step 2: 0 when there is one chunk)."""
    if n <= CHUNK:
        return _pow2(n), 1, 0
    chunks = -(-n // CHUNK)
    return CHUNK, chunks, _pow2(chunks * k)


def supported(shape, axis: int, k: int, dtype: str) -> bool:
    """Static shapes, the last axis, 1 <= k <= min(n, MAX_K), the candidates fit one merge block, 32-bit or
    narrower values."""
    dims = [d if isinstance(d, int) else (int(d) if isinstance(d, tirx.IntImm) else None) for d in shape]
    if not dims or any(d is None or d <= 0 for d in dims) or axis != len(dims) - 1:
        return False
    n = dims[-1]
    if not 1 <= k <= min(n, MAX_K) or tvm.DataType(dtype).bits > 32:
        return False
    slots, _, merge = plan(n, k)
    return k <= slots and merge <= MERGE and int(np.prod(dims)) < LAST_INDEX  # int32 element offsets


def topk_te(x: te.Tensor, k: int, largest: bool) -> tuple[te.Tensor, te.Tensor]:
    """(values, int64 indices) of the best k along x's last axis (static shape, see `supported`)."""
    n = int(x.shape[-1])
    rows = prod(x.shape[:-1])
    _, chunks, merge = plan(n, k)
    out_shape = [*x.shape[:-1], k]
    scratch = max(1, rows * chunks * k) if merge else 1
    outs = te.extern(
        [out_shape, out_shape, [scratch], [scratch]],
        [x],
        lambda ins, outs: _topk_ir(ins[0], outs[0], outs[1], outs[2], outs[3], k, largest),
        dtype=[x.dtype, "int64", x.dtype, "int32"],
        in_buffers=[tirx.decl_buffer(x.shape, x.dtype, "data_buf")],
        out_buffers=[
            tirx.decl_buffer(out_shape, x.dtype, "values_buf"),
            tirx.decl_buffer(out_shape, "int64", "indices_buf"),
            tirx.decl_buffer([scratch], x.dtype, "cand_v_buf"),
            tirx.decl_buffer([scratch], "int32", "cand_i_buf"),
        ],
        name="topk_bitonic",
        tag="topk_bitonic",
    )
    return outs[0], outs[1]


def _worst(dtype: str, largest: bool):
    t = tvm.DataType(dtype)
    if t.type_code in (tvm.DataTypeCode.INT, tvm.DataTypeCode.UINT):
        return tirx.min_value(dtype) if largest else tirx.max_value(dtype)
    return tirx.const(float("-inf") if largest else float("inf"), dtype)


def _topk_ir(data_buf, values_buf, indices_buf, cand_v_buf, cand_i_buf, k: int, largest: bool):
    n = int(data_buf.shape[-1])
    rows = prod(data_buf.shape[:-1])
    slots, chunks, merge = plan(n, k)
    dtype = str(data_buf.dtype)
    gpu = on_gpu()
    worst = _worst(dtype, largest)

    def better(va, ia, vb, ib):
        """(va, ia) comes before (vb, ib) in ONNX's order."""
        wins = va > vb if largest else va < vb
        return tirx.Or(wins, tirx.And(va == vb, ia < ib))

    with IRBuilder() as ib, T.seq_scope():
        data = T.buffer_proxy(T.decl_buffer([rows * n], dtype, data=data_buf.data))
        values = T.buffer_proxy(T.decl_buffer([rows * k], dtype, data=values_buf.data))
        indices = T.buffer_proxy(T.decl_buffer([rows * k], "int64", data=indices_buf.data))
        cand_v, cand_i = T.buffer_proxy(cand_v_buf), T.buffer_proxy(cand_i_buf)

        @contextlib.contextmanager
        def blocks(count: int, threads: int):
            """A block id over [0, count) and, inside, its thread id (the GPU), or a serial loop (the CPU)."""
            if gpu:
                bx, tx = te.thread_axis("blockIdx.x"), te.thread_axis("threadIdx.x")
                frames = [T.attr(bx, "thread_extent", count), T.attr(tx, "thread_extent", threads)]
                with T.frame_scope(frames):
                    yield bx, tx
            else:
                with T.serial(0, count) as b:
                    yield b, None

        @contextlib.contextmanager
        def each(items: int, threads: int, tx):
            """An item id over [0, items), shared by the block's threads (a serial loop on the CPU)."""
            if not gpu:
                with T.serial(0, items) as p:
                    yield p
                return
            with T.serial(0, -(-items // threads)) as r:
                p = r * threads + tx
                if items % threads == 0:
                    yield p
                else:
                    with T.If(p < items), T.Then():
                        yield p

        def barrier():
            if gpu:
                T.evaluate(tvm.ir.Call("tirx.tvm_storage_sync", [tvm.ir.StringImm("shared")], ret_ty="void"))

        def sort(sv, si, size: int, threads: int, tx):
            """The bitonic network over `size` (a power of two) slots of (sv, si): best first."""
            span = 2
            while span <= size:
                j = span // 2
                while j >= 1:
                    with each(size // 2, threads, tx) as p:
                        i = T.Bind((p // j) * (2 * j) + p % j)
                        q = T.Bind(i + j)
                        vi, ii, vq, iq = T.Bind(sv[i]), T.Bind(si[i]), T.Bind(sv[q]), T.Bind(si[q])
                        # Within each span the first half runs best-first, the second worst-first; the last
                        # span (the whole array) is best-first.
                        forward = tirx.bitwise_and(i, span) == 0
                        swap = tirx.Select(forward, better(vq, iq, vi, ii), better(vi, ii, vq, iq))
                        with T.If(swap), T.Then():
                            sv[i], si[i], sv[q], si[q] = vq, iq, vi, ii
                    barrier()
                    j //= 2
                span *= 2

        def scratch(size: int):
            scope = "shared" if gpu else "global"
            sv = T.buffer_proxy(T.decl_buffer([size], dtype, scope=scope))
            si = T.buffer_proxy(T.decl_buffer([size], "int32", scope=scope))
            return sv, si

        # 1. each chunk: its best k
        threads = min(THREADS, max(1, slots // 2))
        with blocks(rows * chunks, threads) as (b, tx):
            sv, si = scratch(slots)
            row = T.Bind(b // chunks)
            start = T.Bind((b % chunks) * slots)
            with each(slots, threads, tx) as s:
                pos = start + s
                inside = pos < n
                sv[s] = tirx.if_then_else(inside, data[row * n + tirx.min(pos, n - 1)], worst)
                si[s] = tirx.if_then_else(inside, tirx.Cast("int32", pos), LAST_INDEX)
            barrier()
            sort(sv, si, slots, threads, tx)
            with each(k, threads, tx) as s:
                if merge:
                    cand_v[b * k + s] = sv[s]
                    cand_i[b * k + s] = si[s]
                else:
                    values[row * k + s] = sv[s]
                    indices[row * k + s] = tirx.Cast("int64", si[s])
        # 2. each row: the best k of its chunks' candidates
        if merge:
            threads = min(THREADS, max(1, merge // 2))
            with blocks(rows, threads) as (row, tx):
                sv, si = scratch(merge)
                with each(merge, threads, tx) as s:
                    inside = s < chunks * k
                    at = row * (chunks * k) + tirx.min(s, chunks * k - 1)
                    sv[s] = tirx.if_then_else(inside, cand_v[at], worst)
                    si[s] = tirx.if_then_else(inside, cand_i[at], LAST_INDEX)
                barrier()
                sort(sv, si, merge, threads, tx)
                with each(k, threads, tx) as s:
                    values[row * k + s] = sv[s]
                    indices[row * k + s] = tirx.Cast("int64", si[s])
    return ib.get()
