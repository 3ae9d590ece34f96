"""Numerical tolerances for comparing a kernel's output with the ONNX reference: the only place they are set.

An element passes when |out - ref| <= atol * scale + rtol * |ref|, with scale = max(1, max |ref| over the output):
the absolute floor follows the output's magnitude, because accumulations (scans, sums, norms) computed in another
order than the reference's round by about eps * (magnitude of the partial sums), also where an element is near zero.
NaN passes only where the reference is NaN. Integer and bool outputs must match exactly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


# fp32: TVM and the reference may differ in summation order and in erf/exp/log implementations.
_FLOAT = {
    "float64": Tolerance(rtol=1e-9, atol=1e-9),
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
    "float16": Tolerance(rtol=1e-2, atol=1e-3),
    "bfloat16": Tolerance(rtol=2e-2, atol=1e-2),
}
EXACT = Tolerance(rtol=0.0, atol=0.0)


def for_dtype(name: str) -> Tolerance:
    return _FLOAT.get(name, EXACT)
