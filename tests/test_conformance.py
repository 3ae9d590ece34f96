"""The conformance runner's CPU part on a fixed slice (the first case of every op type): classification,
lowering, nvcc, case data. The GPU part runs in scripts/conformance.py."""

import json

import pytest

from opforge import conformance


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cases = conformance.ci_slice(conformance.load_cases())
    bundle = tmp_path_factory.mktemp("conformance")
    rows = conformance.build(bundle, cases)
    return cases, rows, bundle


def test_slice_is_representative(built):
    cases, rows, _ = built
    assert len(cases) >= 150
    assert len({c.op_type for c in cases}) >= 60
    assert len(rows) == len(cases)


def test_every_case_has_exactly_one_outcome(built):
    _, rows, bundle = built
    for r in rows:
        if r.get("built"):
            assert "class" not in r
            d = bundle / "cases" / r["case"]
            assert (d / "plan.json").is_file() and (d / "plan.fatbin").is_file() and (d / "data.npz").is_file()
        else:
            assert r["class"] in conformance.CLASSES and r["class"] not in ("pass", "wrong", "runtime-failed")
            assert r["reason"]
    assert json.loads((bundle / "conformance-build.json").read_text())["cases"] == len(rows)


def test_ops_verified_elsewhere_are_built(built):
    _, rows, _ = built
    built_ops = {r["op_type"] for r in rows if r.get("built")}
    # Ops whose plans passed on the H100 in results/kernels-h100.md must lower here too.
    assert {"Erf", "Softmax", "Transpose", "Where", "Gelu", "CumSum", "Einsum"} <= built_ops


def test_ineligibility_rule():
    cases = {c.name: c for c in conformance.load_cases({"test_cast_FLOAT_to_STRING", "test_relu"})}
    assert "cannot hold" in conformance.ineligible_reason(cases["test_cast_FLOAT_to_STRING"].model) or \
        "STRING" in conformance.ineligible_reason(cases["test_cast_FLOAT_to_STRING"].model)
    assert conformance.ineligible_reason(cases["test_relu"].model) is None


def test_shape_like_inputs_are_baked():
    case = conformance.load_cases({"test_reduce_max_default_axes_keepdim_example"})
    case = case[0] if case else conformance.load_cases({"test_reduce_sum_keepdims_example"})[0]
    sub, baked = conformance.case_subgraph(case)
    assert baked and all(b not in sub.input_names for b in baked)
