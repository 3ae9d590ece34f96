"""Comparing one output with its reference under the tolerance of its dtype (opforge.tolerances)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opforge import tolerances


@dataclass
class Comparison:
    ok: bool
    max_abs: float
    max_rel: float
    bad: int  # elements out of tolerance (or shape mismatch: -1)
    total: int

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "max_abs_err": self.max_abs,
            "max_rel_err": self.max_rel,
            "bad": self.bad,
            "elements": self.total,
        }


def compare(out: np.ndarray, ref: np.ndarray, dtype: str) -> Comparison:
    if out.shape != ref.shape:
        return Comparison(False, float("inf"), float("inf"), -1, int(ref.size))
    tol = tolerances.for_dtype(dtype)
    if out.size == 0:
        return Comparison(True, 0.0, 0.0, 0, 0)
    if out.dtype == ref.dtype and np.array_equal(out, ref):  # fast path for big outputs copied or gathered exactly
        return Comparison(True, 0.0, 0.0, 0, int(ref.size))
    if tol.rtol == 0 and tol.atol == 0:
        bad = int(np.count_nonzero(out != ref))
        diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
        return Comparison(bad == 0, float(diff.max()), 0.0, bad, int(ref.size))
    o = out.astype(np.float64)
    r = ref.astype(np.float64)
    both_nan = np.isnan(o) & np.isnan(r)
    same_inf = np.isinf(r) & (o == r)
    diff = np.where(both_nan | same_inf, 0.0, np.abs(o - r))
    diff = np.where(np.isnan(diff), np.inf, diff)  # NaN where the reference has a number: always bad
    finite = np.abs(r[np.isfinite(r)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    bad = int(np.count_nonzero(diff > tol.atol * scale + tol.rtol * np.abs(np.nan_to_num(r))))
    rel = diff / np.maximum(np.abs(np.nan_to_num(r)), 1e-30)
    return Comparison(bad == 0, float(diff.max()), float(np.minimum(rel, 1e300).max()), bad, int(ref.size))


def compare_contexts(specs, contexts: list[list[np.ndarray]], refs: list[np.ndarray]) -> list[Comparison]:
    """Every output of every execution context against its reference; `specs` (TensorSpec-like, with .dtype)
    give the outputs' dtypes, in output order."""
    return [compare(out, np.asarray(ref), spec.dtype) for outs in contexts for spec, out, ref in zip(specs, outs, refs)]
