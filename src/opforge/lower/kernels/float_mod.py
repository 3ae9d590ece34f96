"""ONNX Mod with fmod=0 on floats: the remainder takes the divisor's sign, as NumPy's mod (ONNX's reference) does.

TVM's floor_mod computes x - floor(x / y) * y. For an infinite divisor that is x - 0·inf = NaN, where NumPy gives x
when x and y have the same sign and y otherwise (-3 mod inf = inf). Here: r = fmod(x, y), which is exact; r + y
where r and y differ in sign; a zero remainder takes y's sign. Half types compute in float32: fmod's result is
representable in its inputs' type. Integers keep TVM's legalization.

Mod with fmod=1 (relax.mod): TVM's legalization refuses half types; they compute fmod in float32 here (exact, as
above).
"""

from __future__ import annotations

import tvm
from tvm import te, tirx

from opforge.lower.kernels.kernel_ir import static


def _at(t: te.Tensor, out_shape, idx):
    """t's element for output index idx under NumPy broadcasting (dims aligned right, size-1 dims repeat)."""
    lead = len(out_shape) - len(t.shape)
    return t(*[0 if static(d) == 1 else i for d, i in zip(t.shape, idx[lead:])])


def floor_mod_te(x: te.Tensor, y: te.Tensor, out_shape) -> te.Tensor:
    dtype = str(x.dtype)
    wide = "float64" if dtype == "float64" else "float32"

    def body(*idx):
        a = tirx.Cast(wide, _at(x, out_shape, idx))
        b = tirx.Cast(wide, _at(y, out_shape, idx))
        # The C library's fmod by name: CUDA and LLVM's CPU backend both resolve it (TVM's tirx.fmod has no CPU rule).
        r = tirx.call_pure_extern(wide, "fmod" if wide == "float64" else "fmodf", a, b)
        zero = tirx.const(0.0, wide)
        differ = tirx.any(tirx.all(r < zero, b > zero), tirx.all(r > zero, b < zero))
        r = tirx.Select(differ, r + b, tirx.Select(r == zero, tirx.copysign(zero, b), r))
        return tirx.Cast(dtype, r)

    return te.compute(out_shape, body, name="floor_mod_as_numpy")


def fmod_half_te(x: te.Tensor, y: te.Tensor, out_shape) -> te.Tensor:
    """C's fmod of half-type operands, computed in float32 (its result is representable in the half type)."""
    dtype = str(x.dtype)

    def body(*idx):
        a = tirx.Cast("float32", _at(x, out_shape, idx))
        b = tirx.Cast("float32", _at(y, out_shape, idx))
        return tirx.Cast(dtype, tirx.call_pure_extern("float32", "fmodf", a, b))

    return te.compute(out_shape, body, name="fmod_half")


def legalize():
    """A LegalizeOps override for relax.floor_mod."""
    default = tvm.ir.Op.get("relax.floor_mod").get_attr("FLegalize")

    def f(bb, call):
        x, y = call.args
        out_shape = call.ty.shape
        code = tvm.DataType(str(x.ty.dtype)).type_code
        if code not in (tvm.DataTypeCode.FLOAT, tvm.DataTypeCode.BFLOAT) or out_shape is None:
            return default(bb, call)
        return bb.call_te(floor_mod_te, x, y, list(out_shape), primfunc_name_hint="floor_mod")

    return f


def override(threads: int, config=None):
    """The op registry's entry point (opforge.ops.mod)."""
    return legalize()


def override_fmod(threads: int, config=None):
    """The op registry's entry point for relax.mod (Mod fmod=1): half types here, the rest TVM's legalization."""
    default = tvm.ir.Op.get("relax.mod").get_attr("FLegalize")

    def f(bb, call):
        x, y = call.args
        out_shape = call.ty.shape
        if str(x.ty.dtype) not in ("float16", "bfloat16") or out_shape is None:
            return default(bb, call)
        return bb.call_te(fmod_half_te, x, y, list(out_shape), primfunc_name_hint="fmod_half")

    return f
