import random
import subprocess
from pathlib import Path

import pytest

from opforge.core import expr


def test_evaluate_floor_semantics():
    assert expr.evaluate("(B * 1800 + 1023) // 1024", {"B": 7}) == (7 * 1800 + 1023) // 1024
    assert expr.evaluate("(0 - B) // 4", {"B": 7}) == -2  # floor, not truncation
    assert expr.evaluate("(0 - B) % 4", {"B": 7}) == 1
    assert expr.evaluate("min(B, 3) + max(B, 3)", {"B": 5}) == 8
    assert expr.evaluate("(B < 4) + (B >= 5)", {"B": 5}) == 1


def test_rejects_outside_language():
    with pytest.raises(expr.ExprError):
        expr.parse("__import__('os')")
    with pytest.raises(expr.ExprError):
        expr.evaluate("B", {})


def test_builders_fold_constants():
    assert expr.product(["B", "600", "3"]) == "B * 1800"
    assert expr.align_up("100", 256) == "256"
    assert expr.add("0", "B") == "B"
    assert expr.free_vars("B * N + 3") == {"B", "N"}


def _random_expr(rng: random.Random, depth: int = 0) -> str:
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(["B", "N", str(rng.randint(-9, 40))])
    a, b = _random_expr(rng, depth + 1), _random_expr(rng, depth + 1)
    op = rng.choice(["+", "-", "*", "//", "%", "min", "max", "<", "=="])
    if op in ("min", "max"):
        return f"{op}({a}, {b})"
    if op in ("//", "%"):
        return f"({a}) {op} ({rng.randint(1, 9)})"
    return f"({a}) {op} ({b})"


def test_cpp_printer_matches_python(tmp_path: Path):
    """The C++ arithmetic the plugins compile agrees with the Python evaluator on random expressions."""
    rng = random.Random(1234)
    cases = [(_random_expr(rng), {"B": rng.randint(0, 50), "N": rng.randint(-20, 20)}) for _ in range(300)]
    header = Path(expr.__file__).parent.parent / "templates"
    lines = []
    for e, env in cases:
        value = expr.to_cpp(e, lambda n: "dim_" + n)
        decl = f"int64_t dim_B = {env['B']}, dim_N = {env['N']};"
        lines.append(f'{{ {decl} std::printf("%lld\\n", (long long)({value})); }}')
    body = "\n".join(lines)
    src = tmp_path / "t.cpp"
    src.write_text(
        f'#include "opforgeShapeMath.h"\n#include <algorithm>\n#include <cstdio>\nusing namespace opforge;\n'
        f"int main() {{\n{body}\n}}\n"
    )
    subprocess.run(["g++", "-std=c++17", f"-I{header}", "-o", str(tmp_path / "t"), str(src)], check=True)
    got = [int(x) for x in subprocess.run([str(tmp_path / "t")], capture_output=True, text=True).stdout.split()]
    assert got == [expr.evaluate(e, env) for e, env in cases]
