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


def test_slice_lowers(sample):
    """Every sampled case lowers, or fails with opforge's reason (a LoweringError), never a crash."""
    from opforge.core.errors import OpforgeError
    from opforge.lower.tvm_lower import lower_subgraph
    from opforge.testing import conformance

    pytest.importorskip("tvm")
    lowered, refused = 0, []
    for c in sample:
        sub, _ = conformance.case_subgraph(c.as_case())
        try:
            lower_subgraph(sub)
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
