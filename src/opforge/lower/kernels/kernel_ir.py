"""Helpers for the TIR kernels opforge writes itself (lower/kernels/*.py)."""

from __future__ import annotations

import contextlib

import tvm
from tvm import te, tirx
from tvm.script.ir_builder import tirx as T

from opforge.lower.tir_text import dtype_of


def static(e) -> int | None:
    """A dimension as a Python int, or None when it is symbolic."""
    return int(e) if isinstance(e, (int, tirx.IntImm)) else None


def prod(dims):
    """The product, as a Python int when every dim is static (so sizes can be tested for range and divisibility)."""
    out = 1
    for d in dims:
        n = static(d)
        out = out * (d if n is None else n)
    return out


def vec_lanes(dtype: str) -> int:
    """Elements in 16 bytes: the widest load and store a CUDA thread issues."""
    return max(1, 16 // (tvm.DataType(str(dtype)).bits // 8))


def index_dtype(*sizes) -> str:
    """int32 arithmetic when every size is static and small, int64 otherwise."""
    values = [static(s) for s in sizes]
    return "int32" if all(s is not None and s < 2**31 for s in values) else "int64"


def as_index(e, idt: str):
    """`e` (a Python int or an integer expression) in the index dtype `idt`."""
    e = tirx.const(e, idt) if isinstance(e, int) else e
    return tirx.Cast(idt, e) if dtype_of(e) != idt else e


@contextlib.contextmanager
def each_index(n, threads: int, idt: str, gpu: bool = True):
    """An index over [0, n) inside an IRBuilder: one per thread of a 1-D grid of `threads`-wide blocks (guarded
    against the last block's overhang) on the GPU, a serial loop on the CPU (llvm, the semantic check)."""
    if not gpu:
        with T.serial(0, as_index(n, idt)) as t:
            yield t
        return
    bx, tx = te.thread_axis("blockIdx.x"), te.thread_axis("threadIdx.x")
    blocks = tirx.Cast("int32", (as_index(n, idt) + threads - 1) // threads)
    frames = [T.attr(bx, "thread_extent", blocks), T.attr(tx, "thread_extent", threads)]
    t = as_index(bx, idt) * threads + as_index(tx, idt)
    with T.frame_scope(frames), T.If(t < as_index(n, idt)), T.Then():
        yield t


def copy_vectorized(out, data, n_out, lanes: int, threads: int, idt: str, gpu: bool = True) -> None:
    """out[:] = data[:] over n_out elements (flat buffer proxies), `lanes` per thread where n_out is a static
    multiple of it (one 16-byte load and store), else one."""
    n_static = static(n_out)
    cv = lanes if n_static is not None and n_static % lanes == 0 else 1
    with each_index(as_index(n_out, idt) // cv, threads, idt, gpu) as t, T.vectorized(0, cv) as v:
        out[t * cv + v] = data[t * cv + v]


# CUDA's round-to-nearest intrinsics: nvcc never contracts them into a fused multiply-add.
_ROUNDED = {
    ("mul", "float32"): "__fmul_rn",
    ("add", "float32"): "__fadd_rn",
    ("mul", "float64"): "__dmul_rn",
    ("add", "float64"): "__dadd_rn",
}


def rounded(op: str, a, b, gpu: bool):
    """a*b or a+b rounded on its own, as the reference computes it, never fused with a neighbouring add or multiply.

    nvcc contracts `s + p * b` into one fma by default (--fmad=true), which rounds once instead of twice. That is
    more accurate, but where a kernel's result is ill-conditioned in an intermediate (a sampling coordinate near 250
    moves by half an ulp, 7.6e-6, and a bilinear read then moves by that times the map's gradient) it differs from
    ONNX's reference and onnxruntime, which round each operation, by 6e-5. On the CPU (TVM's llvm target, which
    does not contract) the plain expression is kept.
    """
    dt = dtype_of(a)
    name = _ROUNDED.get((op, dt))
    if gpu and name is not None:
        return tirx.call_pure_extern(dt, name, a, b)
    return a * b if op == "mul" else a + b


def block_barrier(gpu: bool = True) -> None:
    """__syncthreads() for shared memory inside an IRBuilder (nothing on the CPU, where blocks run serially)."""
    if gpu:
        T.evaluate(tvm.ir.Call("tirx.tvm_storage_sync", [tvm.ir.StringImm("shared")], ret_ty="void"))


@contextlib.contextmanager
def blocks(count: int, threads: int, gpu: bool = True):
    """(block id over [0, count), thread id) of a 1-D grid of `threads`-wide blocks on the GPU; on the CPU a serial
    loop over the blocks and no thread id (None)."""
    if gpu:
        bx, tx = te.thread_axis("blockIdx.x"), te.thread_axis("threadIdx.x")
        with T.frame_scope([T.attr(bx, "thread_extent", count), T.attr(tx, "thread_extent", threads)]):
            yield bx, tx
    else:
        with T.serial(0, count) as b:
            yield b, None


@contextlib.contextmanager
def block_items(items: int, threads: int, tx, gpu: bool = True, guard: bool = True):
    """An item id over [0, items) shared by a block's `threads` threads (thread tx takes tx, tx + threads, ...); a
    serial loop on the CPU. Unguarded, the last round's ids may pass `items` (for steps that must not sit inside a
    condition: TVM places no barrier there)."""
    if not gpu:
        with T.serial(0, items) as p:
            yield p
        return
    with T.serial(0, -(-items // threads)) as r:
        p = r * threads + tx
        if items % threads == 0 or not guard:
            yield p
        else:
            with T.If(p < items), T.Then():
                yield p
