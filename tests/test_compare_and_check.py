import numpy as np

from opforge import tolerances
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
