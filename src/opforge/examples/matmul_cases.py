"""Matmul-like nodes at generated extents, for checking opforge.lower.matmul_rule on shapes nobody listed.

Each case is one float32 node (MatMul with a dynamic or broadcast batch, Gemm with transposes, alpha, beta and a
broadcast C, Einsum contractions) whose extents are drawn from a seeded generator over a set that mixes powers of
two with odd and prime numbers (tiles that divide nothing), so a failure replays from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from opforge.examples.onnx_build import single_node_model as m

EXTENTS = (1, 2, 3, 5, 7, 8, 13, 16, 31, 33, 64, 97, 128, 197, 255, 256, 300)
KINDS = ("matmul_batch", "matmul_broadcast", "gemm", "einsum_bij_bjk", "einsum_attention", "einsum_shared_weight")
f32 = "float32"


@dataclass(frozen=True)
class MatmulCase:
    name: str
    model: onnx.ModelProto
    rows: int  # extent of C's rows (M)
    depth: int  # extent of the contraction (K)
    cols: int  # extent of C's columns (N)
    batches: tuple[int, ...]  # values of the symbolic batch B, () when static


def _case(kind: str, k: int, rng: np.random.Generator) -> MatmulCase:
    rows, depth, cols = (int(x) for x in rng.choice(EXTENTS, 3))
    name = f"{k:02d}_{kind}_{rows}x{depth}x{cols}"
    if kind == "matmul_batch":
        model = m("MatMul", [("a", f32, ["B", rows, depth]), ("b", f32, [depth, cols])])
        return MatmulCase(name, model, rows, depth, cols, (1, 3))
    if kind == "matmul_broadcast":
        model = m("MatMul", [("a", f32, [2, 1, rows, depth]), ("b", f32, [3, depth, cols])])
        return MatmulCase(name, model, rows, depth, cols, ())
    if kind == "gemm":
        trans_a, trans_b = (int(x) for x in rng.integers(0, 2, 2))
        alpha, beta = (float(np.float32(x)) for x in rng.uniform(-2, 2, 2))
        c_shape = [[cols], [rows, cols], [1, cols], [rows, 1]][int(rng.integers(0, 4))]
        a_shape = [depth, rows] if trans_a else [rows, depth]
        b_shape = [cols, depth] if trans_b else [depth, cols]
        model = m(
            "Gemm",
            [("a", f32, a_shape), ("b", f32, b_shape), ("c", f32, c_shape)],
            attrs={"transA": trans_a, "transB": trans_b, "alpha": alpha, "beta": beta},
        )
        return MatmulCase(f"{name}_t{trans_a}{trans_b}_c{'x'.join(map(str, c_shape))}", model, rows, depth, cols, ())
    if kind == "einsum_bij_bjk":
        model = m(
            "Einsum",
            [("a", f32, ["B", rows, depth]), ("b", f32, ["B", depth, cols])],
            attrs={"equation": "bij,bjk->bik"},
        )
        return MatmulCase(name, model, rows, depth, cols, (1, 2))
    if kind == "einsum_attention":
        model = m(
            "Einsum",
            [("q", f32, [2, 3, rows, depth]), ("k", f32, [2, 3, cols, depth])],
            attrs={"equation": "bhqd,bhkd->bhqk"},
        )
        return MatmulCase(name, model, rows, depth, cols, ())
    model = m("Einsum", [("x", f32, [2, rows, depth]), ("w", f32, [cols, depth])], attrs={"equation": "bid,jd->bij"})
    return MatmulCase(name, model, rows, depth, cols, ())


def matmul_cases(seed: int = 0, count: int = 18) -> list[MatmulCase]:
    """`count` cases, the kinds in turn, extents drawn from EXTENTS by a generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    return [_case(KINDS[k % len(KINDS)], k, rng) for k in range(count)]
