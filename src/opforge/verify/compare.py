"""Comparing one output with its reference under the tolerance of its dtype (opforge.core.tolerances)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opforge.core import tolerances


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


_CHUNK = 1 << 22  # elements per comparison step: bounded temporaries for outputs of hundreds of MB


def compare(out: np.ndarray, ref: np.ndarray, dtype: str) -> Comparison:
    if out.shape != ref.shape:
        return Comparison(False, float("inf"), float("inf"), -1, int(ref.size))
    tol = tolerances.for_dtype(dtype)
    if out.size == 0:
        return Comparison(True, 0.0, 0.0, 0, 0)
    if out.dtype == ref.dtype and np.array_equal(out, ref):  # fast path for big outputs copied or gathered exactly
        return Comparison(True, 0.0, 0.0, 0, int(ref.size))
    o_all, r_all = out.reshape(-1), ref.reshape(-1)
    chunks = [slice(i, i + _CHUNK) for i in range(0, o_all.size, _CHUNK)]
    if tol.rtol == 0 and tol.atol == 0:
        bad, max_abs = 0, 0.0
        for sl in chunks:
            o, r = o_all[sl], r_all[sl]
            bad += int(np.count_nonzero(o != r))
            max_abs = max(max_abs, float(np.abs(o.astype(np.float64) - r.astype(np.float64)).max()))
        return Comparison(bad == 0, max_abs, 0.0, bad, int(ref.size))
    # float32 arithmetic is exact enough for tolerances of 1e-4 and above, and halves the memory traffic.
    work = np.float64 if dtype == "float64" else np.float32
    scale = 1.0
    for sl in chunks:
        r = r_all[sl].astype(work)
        finite = np.abs(r[np.isfinite(r)])
        if finite.size:
            scale = max(scale, float(finite.max()))
    bad, max_abs, max_rel = 0, 0.0, 0.0
    for sl in chunks:
        o, r = o_all[sl].astype(work), r_all[sl].astype(work)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(o - r)
            diff[(np.isnan(o) & np.isnan(r)) | (np.isinf(r) & (o == r))] = 0
            diff[np.isnan(diff)] = np.inf  # NaN where the reference has a number: always bad
            mag = np.abs(np.nan_to_num(r))
            bad += int(np.count_nonzero(diff > tol.atol * scale + tol.rtol * mag))
            max_abs = max(max_abs, float(diff.max()))
            max_rel = max(max_rel, float(np.minimum(diff / np.maximum(mag, 1e-30), 1e300).max()))
    return Comparison(bad == 0, max_abs, max_rel, bad, int(ref.size))


def compare_contexts(specs, contexts: list[list[np.ndarray]], refs: list[np.ndarray]) -> list[Comparison]:
    """Every output of every execution context against its reference; `specs` (TensorSpec-like, with .dtype)
    give the outputs' dtypes, in output order."""
    return [compare(out, np.asarray(ref), spec.dtype) for outs in contexts for spec, out, ref in zip(specs, outs, refs)]
