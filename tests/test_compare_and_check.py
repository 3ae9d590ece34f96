import numpy as np

from opforge.core import tolerances
from opforge.verify.check import POISONS, check_once
from opforge.verify.compare import compare
from opforge.verify.reference import reference_outputs


def test_float_tolerance_and_nan():
    rng = np.random.default_rng()
    ref = rng.uniform(-2, 2, 1000).astype(np.float32)
    assert compare(ref.copy(), ref, "float32").ok
    out = ref.copy()
    out[3] = np.nan  # an unwritten element under 0xFF poison
    c = compare(out, ref, "float32")
    assert not c.ok and c.bad == 1
    out = ref.copy()
    out[5] += 10 * tolerances.for_dtype("float32").rtol * max(1.0, np.abs(ref).max()) + 1e-3
    assert not compare(out, ref, "float32").ok
    assert not compare(ref[:10], ref, "float32").ok  # shape mismatch


def test_big_outputs_are_compared_in_chunks_without_missing_an_element():
    """Outputs of 10^8 elements are compared chunk by chunk: an error in the last chunk, a NaN where the
    reference has one, and the scale taken over every chunk all count."""
    from opforge.verify.compare import _CHUNK

    rng = np.random.default_rng()
    n = 2 * _CHUNK + 17
    ref = rng.uniform(0.5, 2, n).astype(np.float32)
    ref[7] = np.nan
    ref[_CHUNK + 3] = 1000.0  # sets the absolute floor for every chunk
    out = ref.copy()
    assert compare(out, ref, "float32").ok
    out[-1] += 1.0
    c = compare(out, ref, "float32")
    assert not c.ok and c.bad == 1
    out = ref.copy()
    out[-1] += 0.5 * tolerances.for_dtype("float32").atol * 1000.0  # within the floor the big element sets
    assert compare(out, ref, "float32").ok


def test_integers_exact():
    ref = np.arange(1, 11, dtype=np.int64)
    out = ref.copy()
    out[2] += 1
    assert not compare(out, ref, "int64").ok


def test_check_once_catches_unwritten_element(planned_cases):
    _case, sub, plan = planned_cases["erf"]

    def correct(x, poison):
        outs = reference_outputs(sub.model, x)[0]
        return [outs, [o.copy() for o in outs]]

    def forgets_one(x, poison):
        outs = [o.copy() for o in reference_outputs(sub.model, x)[0]]
        outs[0].reshape(-1)[17] = np.frombuffer(bytes([poison]) * 4, np.float32)[0]
        return [outs]

    rng = np.random.default_rng()
    row = check_once(plan, sub.model, correct, {"B": 5}, rng)
    assert row["ok"] and row["contexts"] == 2
    assert not check_once(plan, sub.model, forgets_one, {"B": 5}, rng)["ok"]
    assert len(POISONS) == 2 and POISONS[0] != POISONS[1]


def test_reference_runs_a_model_of_a_newer_ir_version_through_onnxruntime():
    """A model whose IR version is newer than this onnxruntime reads (the GPU host's is older than the onnx that
    wrote it) is run declared with the lowest IR version its opsets need, not handed to a slower evaluator."""
    import onnx
    from onnx import TensorProto, helper

    from opforge.verify.reference import reference_outputs

    g = helper.make_graph(
        [helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8]),
            helper.make_tensor_value_info("i", TensorProto.INT64, [3, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 99
    rng = np.random.default_rng(4)
    x, i = rng.standard_normal((3, 8)).astype(np.float32), rng.integers(0, 8, (3, 2))
    (y,), who = reference_outputs(m, [x, i])
    assert who == "onnxruntime"
    np.testing.assert_array_equal(y, np.take_along_axis(x, i, axis=1))
    assert m.ir_version == 99 and onnx.helper.find_min_ir_version_for(list(m.opset_import)) < 99  # input untouched
