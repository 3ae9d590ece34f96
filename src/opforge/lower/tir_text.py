"""TIR integer expressions -> opforge.core.expr strings."""

from __future__ import annotations

from collections.abc import Mapping

from opforge.core import expr
from opforge.core.errors import LoweringError


def tir_text(e, names: Mapping) -> str:
    """The expression `e` as an opforge.core.expr string, with each free TIR variable replaced by names[var]."""
    from tvm import tirx as T

    def go(x) -> str:
        if isinstance(x, T.IntImm):
            return str(int(x.value))
        if isinstance(x, T.Var):
            if x in names:
                return names[x]
            raise LoweringError(f"shape variable {x.name} is not bound to an input dimension (data-dependent shape?)")
        if (
            isinstance(x, T.Cast)
            and "int" in dtype_of(x)
            and ("int" in dtype_of(x.value) or dtype_of(x.value) == "bool")
        ):
            return go(x.value)
        cmp = {T.LT: "<", T.LE: "<=", T.GT: ">", T.GE: ">=", T.EQ: "==", T.NE: "!="}
        for cls, sym in cmp.items():
            if isinstance(x, cls):
                return f"({go(x.a)} {sym} {go(x.b)})"
        binop = {T.Add: "+", T.Sub: "-", T.Mul: "*", T.FloorDiv: "//", T.FloorMod: "%"}
        for cls, sym in binop.items():
            if isinstance(x, cls):
                return f"({go(x.a)} {sym} {go(x.b)})"
        # Truncating division equals floor division on the non-negative sizes that appear in launches.
        if isinstance(x, T.Div):
            return f"({go(x.a)} // {go(x.b)})"
        if isinstance(x, T.Mod):
            return f"({go(x.a)} % {go(x.b)})"
        if isinstance(x, (T.RShift, T.LShift)):
            shift = expr.fold(go(x.b))
            if not expr.is_constant(shift):
                raise LoweringError(f"shift by a symbolic amount in {x}")
            factor = 2 ** expr.evaluate(shift, {})
            return f"({go(x.a)} // {factor})" if isinstance(x, T.RShift) else f"({go(x.a)} * {factor})"
        if isinstance(x, T.Min):
            return f"min({go(x.a)}, {go(x.b)})"
        if isinstance(x, T.Max):
            return f"max({go(x.a)}, {go(x.b)})"
        raise LoweringError(f"shape expression {x} ({type(x).__name__}) is outside opforge's expression language")

    return expr.fold(go(e))


def dtype_of(x) -> str:
    ty = getattr(x, "ty", None)
    return str(getattr(ty, "dtype", ty))
