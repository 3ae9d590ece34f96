"""Symbolic shape expressions: the integer language of kernel plans.

An expression is a string over dimension names and integer constants with `+ - * // %`, unary minus,
`min(a, b)` / `max(a, b)` and one comparison `< <= > >= == !=` worth 1 or 0: e.g. `"(B * 1800 + 1023) // 1024"`.
`//` and `%` are floor division and floor modulo (TVM's floordiv/floormod). The same string is evaluated in
Python (the launcher), printed as C++ int64 arithmetic (the plugin's enqueue) and as IExprBuilder calls (the
plugin's getOutputShapes).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from functools import lru_cache

_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)
_CMPOPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


class ExprError(ValueError):
    pass


@lru_cache(maxsize=4096)
def parse(text: str) -> ast.expr:
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as e:
        raise ExprError(f"bad shape expression {text!r}: {e.msg}") from None
    _check(tree, text)
    return tree


def _check(node: ast.expr, text: str) -> None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return
    if isinstance(node, ast.Name):
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        _check(node.operand, text)
        return
    if isinstance(node, ast.BinOp) and isinstance(node.op, _BINOPS):
        _check(node.left, text)
        _check(node.right, text)
        return
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMPOPS:
        _check(node.left, text)
        _check(node.comparators[0], text)
        return
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("min", "max")
        and len(node.args) == 2
        and not node.keywords
    ):
        for a in node.args:
            _check(a, text)
        return
    raise ExprError(f"bad shape expression {text!r}: {ast.dump(node)} is outside the expression language")


def free_vars(text: str) -> set[str]:
    return {n.id for n in ast.walk(parse(text)) if isinstance(n, ast.Name) and n.id not in ("min", "max")}


def evaluate(text: str, env: Mapping[str, int]) -> int:
    return _eval(parse(text), env, text)


def _eval(node: ast.expr, env: Mapping[str, int], text: str) -> int:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        try:
            return int(env[node.id])
        except KeyError:
            raise ExprError(f"shape expression {text!r} needs dimension {node.id!r}") from None
    if isinstance(node, ast.UnaryOp):
        return -_eval(node.operand, env, text)
    if isinstance(node, ast.Call):
        a, b = (_eval(x, env, text) for x in node.args)
        return min(a, b) if node.func.id == "min" else max(a, b)
    if isinstance(node, ast.Compare):
        a, b = _eval(node.left, env, text), _eval(node.comparators[0], env, text)
        op = type(node.ops[0])
        return int(
            {
                ast.Lt: a < b,
                ast.LtE: a <= b,
                ast.Gt: a > b,
                ast.GtE: a >= b,
                ast.Eq: a == b,
                ast.NotEq: a != b,
            }[op]
        )
    assert isinstance(node, ast.BinOp)
    a, b = _eval(node.left, env, text), _eval(node.right, env, text)
    if isinstance(node.op, ast.Add):
        return a + b
    if isinstance(node.op, ast.Sub):
        return a - b
    if isinstance(node.op, ast.Mult):
        return a * b
    if b == 0:
        raise ExprError(f"shape expression {text!r} divides by zero")
    return a // b if isinstance(node.op, ast.FloorDiv) else a % b


def is_constant(text: str) -> bool:
    return not free_vars(text)


def fold(text: str) -> str:
    """The expression with constant results folded to a literal (the rest is kept as written)."""
    return str(evaluate(text, {})) if is_constant(text) else text


# --- builders used when plans are made ----------------------------------------------------------------------


def _atom(a: str) -> str:
    return a if a.isidentifier() or a.lstrip("-").isdigit() else f"({a})"


def add(a: str, b: str) -> str:
    if a == "0":
        return b
    if b == "0":
        return a
    return fold(f"{_atom(a)} + {_atom(b)}")


def mul(a: str, b: str) -> str:
    if a == "1":
        return b
    if b == "1":
        return a
    return fold(f"{_atom(a)} * {_atom(b)}")


def align_up(a: str, alignment: int) -> str:
    return fold(f"({_atom(a)} + {alignment - 1}) // {alignment} * {alignment}")


def product(items: list[str]) -> str:
    """Product with the constant factors multiplied out: ["B", "600", "3"] -> "B * 1800"."""
    const = 1
    symbolic = []
    for it in items:
        if is_constant(it):
            const *= evaluate(it, {})
        else:
            symbolic.append(it)
    out = "1"
    for it in symbolic:
        out = mul(out, it)
    return mul(out, str(const)) if const != 1 or out == "1" else out


# --- C++ printers -------------------------------------------------------------------------------------------

_CPP_OP = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}


def to_cpp(text: str, name_of: Callable[[str], str]) -> str:
    """C++ int64 arithmetic. Floor division/modulo go through opforge::floorDiv/floorMod (defined in the plugin
    header) so that the C++ value equals the Python value for every sign."""
    return _cpp(parse(text), name_of)


def _cpp(node: ast.expr, name_of: Callable[[str], str]) -> str:
    if isinstance(node, ast.Constant):
        return f"int64_t{{{node.value}}}"
    if isinstance(node, ast.Name):
        return name_of(node.id)
    if isinstance(node, ast.UnaryOp):
        return f"(-{_cpp(node.operand, name_of)})"
    if isinstance(node, ast.Call):
        a, b = (_cpp(x, name_of) for x in node.args)
        return f"std::{node.func.id}<int64_t>({a}, {b})"
    if isinstance(node, ast.Compare):
        a, b = _cpp(node.left, name_of), _cpp(node.comparators[0], name_of)
        return f"int64_t({a} {_CMPOPS[type(node.ops[0])]} {b})"
    assert isinstance(node, ast.BinOp)
    a, b = _cpp(node.left, name_of), _cpp(node.right, name_of)
    if isinstance(node.op, ast.FloorDiv):
        return f"floorDiv({a}, {b})"
    if isinstance(node.op, ast.Mod):
        return f"floorMod({a}, {b})"
    return f"({a} {_CPP_OP[type(node.op)]} {b})"


def to_dim_expr(text: str, name_of: Callable[[str], str], builder: str = "exprBuilder") -> str:
    """A C++ expression of type `IDimensionExpr const*` built with TensorRT's IExprBuilder."""
    return _dim(parse(text), name_of, builder)


def _dim(node: ast.expr, name_of: Callable[[str], str], b: str) -> str:
    def op(kind: str, x: str, y: str) -> str:
        return f"{b}.operation(nvinfer1::DimensionOperation::{kind}, *{x}, *{y})"

    if isinstance(node, ast.Constant):
        return f"{b}.constant({node.value})"
    if isinstance(node, ast.Name):
        return name_of(node.id)
    if isinstance(node, ast.UnaryOp):
        return op("kSUB", f"{b}.constant(0)", _dim(node.operand, name_of, b))
    if isinstance(node, ast.Call):
        x, y = (_dim(a, name_of, b) for a in node.args)
        return op("kMIN" if node.func.id == "min" else "kMAX", x, y)
    if isinstance(node, ast.Compare):
        x, y = _dim(node.left, name_of, b), _dim(node.comparators[0], name_of, b)
        one = f"{b}.constant(1)"
        kind = type(node.ops[0])
        if kind is ast.Lt:
            return op("kLESS", x, y)
        if kind is ast.Gt:
            return op("kLESS", y, x)
        if kind is ast.LtE:  # a <= b  ==  1 - (b < a)
            return op("kSUB", one, op("kLESS", y, x))
        if kind is ast.GtE:
            return op("kSUB", one, op("kLESS", x, y))
        if kind is ast.Eq:
            return op("kEQUAL", x, y)
        return op("kSUB", one, op("kEQUAL", x, y))
    assert isinstance(node, ast.BinOp)
    x, y = _dim(node.left, name_of, b), _dim(node.right, name_of, b)
    if isinstance(node.op, ast.Add):
        return op("kSUM", x, y)
    if isinstance(node.op, ast.Sub):
        return op("kSUB", x, y)
    if isinstance(node.op, ast.Mult):
        return op("kPROD", x, y)
    if isinstance(node.op, ast.FloorDiv):
        return op("kFLOOR_DIV", x, y)
    # a mod b = a - (a floordiv b) * b: IExprBuilder has no modulo.
    return op("kSUB", x, op("kPROD", op("kFLOOR_DIV", x, y), y))
