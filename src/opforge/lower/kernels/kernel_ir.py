"""Helpers for the TIR kernels opforge writes itself (lower/scatter_nd.py, lower/resize.py)."""

from __future__ import annotations

import tvm
from tvm import tirx

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
