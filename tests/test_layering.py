"""Stages only look down: every import inside src/opforge (function-level ones included) goes to a module of its own
layer or a lower one. The layers follow the data: core -> ops -> extract -> lower -> plan -> emit -> build -> runtime
-> verify -> tune -> bench/testing -> the pipeline modules (generate, auto, inspect, api) -> cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "opforge"

LAYERS = [
    {"core", "data", "__version__"},  # the version string sits in the package root, which every import loads anyway
    {"ops", "examples"},
    {"extract"},
    {"lower"},
    {"plan"},
    {"emit"},
    {"build"},
    {"runtime"},
    {"verify"},
    {"tune"},
    {"bench", "testing"},
    {"generate", "auto", "inspect_model", "api", "trt_parser", "__init__"},
    {"cli", "__main__"},
]


def _layer(module: str) -> int:
    """The layer of a module given as opforge.<part>...; the package root itself counts as the pipeline."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    for k, names in enumerate(LAYERS):
        if head in names:
            return k
    raise AssertionError(f"{module}: no layer (add it to LAYERS in tests/test_layering.py)")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "opforge":
            names = [f"{node.module}.{a.name}" if node.module == "opforge" else node.module for a in node.names]
            out += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "opforge"]
    return out


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "egg-info" not in str(p))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_look_down(path):
    module = ".".join(("opforge", *path.relative_to(SRC).with_suffix("").parts))
    mine = _layer(module)
    upward = [
        f"line {line}: {target} (layer {_layer(target)} > {mine})"
        for line, target in _imports(path)
        if _layer(target) > mine
    ]
    assert not upward, f"{module} imports a stage above it: " + "; ".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule can fail: a function-level import of tune from lower is found."""
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from opforge.tune.space import candidates\n")
    ((line, target),) = _imports(p)
    assert line == 2 and _layer(target) > _layer("opforge.lower.tvm_lower")
