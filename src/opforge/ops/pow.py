"""Pow: TVM's power is float-only and wants one type; an integer base or mixed types are decomposed.

An integer base with an integer exponent is raised by square-and-multiply over the exponent's low EXPONENT_BITS
bits in the base's type: exact, and wrapping on overflow as NumPy (ONNX's reference) wraps, since multiplication
modulo 2^n is what the integer kernels compute. Exponents of 2^EXPONENT_BITS and more are outside the op's input
domain here (every base but 0 and +-1 overflows long before; the input domain draws exponents below it)."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import FLOATS, Emitter, InputDomain, OpRule


def _mixed_pow(e: Emitter, node: onnx.NodeProto, _a: dict) -> bool:
    """The result has the base's type. A float base takes the exponent in its type. An integer base goes through
    float64 and back with a truncating Cast, as ONNX's reference (NumPy's power, then astype) does; results within
    1e-9 of an integer snap to it first, so that an exact power off by an ulp does not truncate to one less."""
    x, y = node.input
    base, exponent = e.types.get(x), e.types.get(y)
    if base is None or exponent is None or (base == exponent and base in FLOATS):
        return False  # TVM's own Pow
    if base in FLOATS:
        e.op("Pow", x, e.op("Cast", y, to=base), out=node.output[0])
        return True
    if exponent not in FLOATS:
        _integer_power(e, x, y, base, exponent, node.output[0])
        return True
    f64 = TensorProto.DOUBLE
    r = e.op("Pow", e.op("Cast", x, to=f64), e.op("Cast", y, to=f64))
    nearest = e.op("Round", r)
    tol = e.op("Mul", e.op("Max", e.op("Abs", r), e.const(1.0, f64)), e.const(1e-9, f64))
    exact = e.op("LessOrEqual", e.op("Abs", e.op("Sub", r, nearest)), tol)
    e.op("Cast", e.op("Where", exact, nearest, r), to=base, out=node.output[0])
    return True


EXPONENT_BITS = 6


def _integer_power(e: Emitter, x: str, y: str, base: int, exponent: int, out: str) -> None:
    """x ** y for integer x and y >= 0, by the exponent's bits: result *= (bit k of y ? x^(2^k) : 1)."""
    y64 = y if exponent == TensorProto.INT64 else e.op("Cast", y, to=TensorProto.INT64)
    one = e.const(1, base)
    two = e.const(2, TensorProto.INT64)
    result, square, rest = None, x, y64
    for k in range(EXPONENT_BITS):
        # bit k of y (y >= 0): Mod/Div exist at every opset, BitwiseAnd only from 18
        bit = e.op("Equal", e.op("Mod", rest, two), e.const(1, TensorProto.INT64))
        rest = e.op("Div", rest, two)
        factor = e.op("Where", bit, square, one)
        last = k == EXPONENT_BITS - 1
        result = factor if result is None else e.op("Mul", result, factor, out=out if last else None)
        if not last:
            square = e.op("Mul", square, square)


def _exponents(d: InputDomain) -> None:
    """Integer exponents in [0, 2^EXPONENT_BITS): NumPy refuses negative integer powers, and larger exponents
    overflow for every base but 0 and +-1 (see the module's docstring)."""
    name = d.free(1)
    if name is None:
        return
    v = d.values[name]
    if v.dtype.kind in "iu":
        d.values[name] = d.rng.integers(0, 1 << EXPONENT_BITS, size=v.shape).astype(v.dtype)


def _torch(torch, node, consts):
    return lambda x, y: torch.pow(x, y)


RULES = [
    OpRule(
        ("Pow",),
        lowering="rewrite",
        summary="TVM; integer powers by square-and-multiply (wrapping like NumPy), mixed types through float64",
        rewrite=_mixed_pow,
        inputs=_exponents,
        value_range=(0.1, 4.0),
        torch=_torch,
    )
]
