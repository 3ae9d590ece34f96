"""The fuzzer's CI slice: seeded cases over every op type with a seed form, generated deterministically, valid
under ONNX's reference, lowered by opforge (a few through nvcc, slow), and checked numerically on the CPU with TVM
(llvm) for a fixed seeded sample. Failures name the case and its seed: `python scripts/fuzz.py replay` reruns it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from opforge.testing import fuzz

SEED = 14


@pytest.fixture(scope="module")
def forms():
    return fuzz.seed_forms()


@pytest.fixture(scope="module")
def cases(forms):
    return fuzz.generate(SEED, 2, forms=forms)


def test_generation_is_deterministic_and_covers_the_ops(forms, cases):
    assert len(forms) >= 100
    assert len({c.op_type for c in cases}) >= 100
    again = fuzz.make_case(cases[0].op_type, 0, SEED, forms[cases[0].op_type])
    assert again.model.SerializeToString() == cases[0].model.SerializeToString()
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(again.inputs, cases[0].inputs))


def test_cases_are_mutated_and_recorded(cases):
    assert sum(bool(c.mutation.get("dims")) for c in cases) > len(cases) // 3
    assert sum(bool(c.mutation.get("dtypes")) for c in cases) > len(cases) // 10
    assert sum(bool(c.mutation.get("attributes")) for c in cases) > len(cases) // 10
    for c in cases:
        rec = c.record()
        assert rec["seed"][0] == SEED and rec["case"] == c.name
        assert all(x.size <= fuzz.MAX_ELEMENTS for x in c.inputs)


def test_run_side_imports_without_tvm():
    saved = {k: v for k, v in sys.modules.items() if k == "tvm" or k.startswith("tvm.")}
    try:
        sys.modules["tvm"] = None  # type: ignore[assignment]
        import importlib

        import opforge.testing.fuzz as f

        importlib.reload(f)
    finally:
        del sys.modules["tvm"]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def sample(cases):
    rng = np.random.default_rng(SEED)
    return [cases[int(k)] for k in sorted(rng.choice(len(cases), size=min(300, len(cases)), replace=False))]


def test_slice_lowers(sample, tmp_path):
    """Every sampled case lowers, or fails with opforge's reason (a LoweringError), never a crash."""
    from opforge.core.errors import OpforgeError
    from opforge.plan.isolated import IsolatedPlanner
    from opforge.testing import conformance

    pytest.importorskip("tvm")
    lowered, refused = 0, []
    with IsolatedPlanner() as planner:  # TVM crashes on some generated nodes: the worker dies, not the test
        for c in sample:
            sub, _ = conformance.case_subgraph(c.as_case())
            try:
                planner.plan(sub, tmp_path)
                lowered += 1
            except OpforgeError as e:
                refused.append(f"{c.name}: {str(e)[:100]}")
    assert lowered >= 0.6 * len(sample), refused[:20]


KNOWN_CPU_DIVERGENCES: dict[str, str] = {}  # op type -> why (with the issue it is tracked in)


def test_cpu_check_on_a_seeded_sample(cases):
    """TVM (llvm) runs each case as opforge lowers it; every sampled case that runs must match ONNX's reference."""
    pytest.importorskip("tvm")
    rng = np.random.default_rng(SEED + 1)
    picked = [cases[int(k)] for k in rng.choice(len(cases), size=min(60, len(cases)), replace=False)]
    wrong = []
    for c in picked:
        r = fuzz.cpu_check(c)
        if r["cpu_check"] == "wrong" and c.op_type not in KNOWN_CPU_DIVERGENCES:
            wrong.append(f"{c.name} seed={c.seed} {c.mutation} max_abs={r['cpu_max_abs_err']:.3g}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.slow
def test_a_few_cases_build_as_plugins(tmp_path, cases):
    """nvcc on a handful of cases (one library), the fuzz bundle as the GPU side reads it."""
    import json

    picked = [c for c in cases if c.op_type in ("Add", "RoiAlign", "Softmax", "Gather")][:6]
    rows = fuzz.build(tmp_path, picked)
    assert sum(bool(r.get("built")) for r in rows) >= 4
    info = json.loads((tmp_path / fuzz.BUILD_RECORD).read_text())
    assert all("seed" in r and "mutation" in r for r in info["rows"])
    assert fuzz.load_case(tmp_path, picked[0].name).model.SerializeToString() == picked[0].model.SerializeToString()


def test_families_share_one_symbolic_node(cases):
    """Shape siblings keep the node (attributes, types, constants) and change only its free dims, consistently;
    the family's symbolic node names those dims, so the family builds one plugin run at several shapes."""
    families: dict[str, list] = {}
    for c in cases:
        if c.symbolic is not None:
            families.setdefault(c.family, []).append(c)
    assert len(families) > len({c.op_type for c in cases}) // 3
    for name, members in families.items():
        base = next(m for m in members if m.name == name)
        assert len(members) >= 2 and len({tuple(x.shape for x in m.inputs) for m in members}) == len(members)
        assert all(m.symbolic is base.symbolic for m in members)
        node = base.model.graph.node[0].SerializeToString()
        assert all(m.model.graph.node[0].SerializeToString() == node for m in members)
        symbolic = {d.dim_param for vi in base.symbolic.graph.input for d in vi.type.tensor_type.shape.dim}
        assert symbolic - {""}, name


def test_siblings_run_through_the_symbolic_lowering(cases):
    """A seeded sample of siblings, lowered from their family's symbolic node, matches ONNX's reference on TVM."""
    pytest.importorskip("tvm")
    sibs = [c for c in cases if c.mutation.get("sibling_of") and c.op_type in ("Add", "MatMul", "Softmax", "Gather")]
    assert sibs
    for c in sibs[:6]:
        assert fuzz.cpu_check(c)["cpu_check"] == "pass", (c.name, c.seed)


def test_roialign_grid_is_enumerated(cases):
    """The registry's fuzz grid for RoiAlign (spatial scales of FPN levels x both coordinate modes x avg/max) is
    generated in full, each point with its attributes set."""
    grid = [c for c in cases if c.op_type == "RoiAlign" and "grid" in c.mutation]
    points = {tuple(sorted(c.mutation["grid"].items())) for c in grid}
    assert len(points) == 5 * 2 * 2
    for c in grid:
        a = {x.name: x for x in c.model.graph.node[0].attribute}
        assert abs(a["spatial_scale"].f - c.mutation["grid"]["spatial_scale"]) < 1e-7
