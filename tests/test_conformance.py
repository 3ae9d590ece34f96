"""The conformance runner's CPU part on a fixed slice (the first case of every op type): classification,
lowering, plugin libraries, case data, and each plugin through the harness's IPluginV3 sequence up to the first
CUDA call. The GPU part runs in scripts/conformance.py."""

import json

import pytest

from opforge.build.package import HARNESS_PATH
from opforge.testing import conformance


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
            assert (d / "plan.json").is_file() and (d / "plugin_node.onnx").is_file() and (d / "data.bin").is_file()
            assert (bundle / r["library"]).is_file()
        else:
            assert r["class"] in conformance.CLASSES and r["class"] not in ("pass", "wrong", "runtime-failed")
            assert r["reason"]
    assert json.loads((bundle / "conformance-build.json").read_text())["cases"] == len(rows)


def test_plugins_load_and_pass_the_build_sequence(built):
    """Every built case's plugin: creator lookup, fields, shapes, formats, serialize/deserialize (no GPU)."""
    from opforge.verify.harness import Harness

    _, rows, bundle = built
    harness = Harness(bundle / HARNESS_PATH)
    declared: dict = {}
    done = 0
    for r in rows:
        if not r.get("built"):
            continue
        case = conformance.load_built_case(bundle, r, harness, declared)
        outs = case.call(0xFF, False)
        if case.plan.sizes:  # data-dependent: allocated at the upper bound, plus the size tensors (no enqueue here)
            assert len(outs[0]) == len(case.plan.outputs), r["case"]
        else:
            assert [o.shape for o in outs[0]] == [e.shape for e in case.expected], r["case"]
        done += 1
    assert done >= 100


def test_function_ops_are_lowered_through_their_bodies(built):
    """Ops TVM's frontend lacks or gets wrong (Attention, NegativeLogLikelihoodLoss, Celu, ...) lower through
    their ONNX function bodies; expanded cases with shape arithmetic lower through constant folding."""
    _, rows, _ = built
    by_op = {r["op_type"]: r for r in rows}
    for op in ("Attention", "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss", "LayerNormalization", "Shape"):
        assert by_op[op].get("built"), by_op[op]


def test_ops_verified_elsewhere_are_built(built):
    _, rows, _ = built
    # Ops whose plans passed on the H100 in results/kernels-h100.md never fail to lower here (a case may still be
    # ineligible, e.g. float64 data).
    verified = {"Erf", "Softmax", "Transpose", "Where", "Gelu", "CumSum", "Einsum"}
    mine = [r for r in rows if r["op_type"] in verified]
    assert {r["op_type"] for r in mine} == verified
    assert all(r.get("built") or r["class"] == "ineligible" for r in mine), [r for r in mine if not r.get("built")]
    assert any(r.get("built") for r in mine)


def test_ineligibility_rule():
    cases = conformance.load_cases()
    strings = [c for c in cases if any(vi.type.tensor_type.elem_type == 8 for vi in c.model.graph.input)]
    sequences = [c for c in cases if any(vi.type.HasField("sequence_type") for vi in c.model.graph.input)]
    assert strings and sequences
    assert "STRING" in conformance.ineligible_reason(strings[0].model)
    assert "not a tensor" in conformance.ineligible_reason(sequences[0].model)
    relu = next(c for c in cases if c.name == "test_relu")
    assert conformance.ineligible_reason(relu.model) is None


def test_shape_like_inputs_are_baked():
    case = conformance.load_cases({"test_reduce_sum_keepdims_example"})[0]
    sub, baked = conformance.case_subgraph(case)
    assert baked == ["axes"]
    assert sub.input_names == ["data"] and any(t.name == "axes" for t in sub.model.graph.initializer)


def test_random_ops_are_ineligible():
    case = conformance.load_cases({"test_training_dropout"})[0]
    assert "random" in conformance.ineligible_reason(case.model)


def test_case_data_round_trips_bfloat16(tmp_path):
    import ml_dtypes
    import numpy as np

    a = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    b = np.arange(4, dtype=np.int64)
    scalar = np.array(2.5, np.float32)
    conformance.save_arrays(tmp_path / "d", {"a": a, "b": b, "s": scalar})
    got = conformance.load_arrays(tmp_path / "d")
    assert got["s"].shape == () and got["s"] == scalar
    assert got["a"].dtype == a.dtype and np.array_equal(got["a"].astype(np.float32), a.astype(np.float32))
    assert np.array_equal(got["b"], b)
