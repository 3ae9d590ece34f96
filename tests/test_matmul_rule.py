"""opforge's float32 matmul schedule (opforge.lower.matmul_rule) and the tuned schedules of matmul-like nodes.

The kernels' values are checked on the GPU (scripts/check_matmul_rule.py, results/matmul-rule-h100.md: every
generated case under configurations of the whole tuning space); here, what the CPU can check: which rule takes
which function, the tile each configuration gives, and that a length-1 contraction keeps its epilogue apart."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

pytest.importorskip("tvm")

from opforge.core.schedule import ScheduleConfig
from opforge.examples.matmul_cases import matmul_cases
from opforge.extract import extract_nodes
from opforge.lower import matmul_rule
from opforge.tune.space import candidates


def _padded(rows: int, cols: int, bm: int, bn: int) -> int:
    return -(-rows // bm) * bm * (-(-cols // bn) * bn)


def test_thread_grid_pads_least_within_the_thread_budget():
    rng = np.random.default_rng(7)
    for _ in range(60):
        rows, cols = (int(x) for x in rng.integers(1, 700, 2))
        threads = int(rng.choice([64, 128, 256, 512, 1024]))
        tm, tn = (int(x) for x in rng.choice([2, 4, 8], 2))
        ty, tx = matmul_rule.thread_grid(threads, tm, tn, rows, cols)
        assert threads // 2 <= ty * tx <= threads, (rows, cols, threads, ty, tx)
        # The least padding any grid of threads/2 .. threads threads gives, found here by brute force.
        least = min(
            _padded(rows, cols, y * tm, x * tn)
            for y in range(1, threads + 1)
            for x in range(1, threads // y + 1)
            if 2 * y * x >= threads
        )
        assert _padded(rows, cols, ty * tm, tx * tn) <= least * 1.02 + 1, (rows, cols, threads, tm, tn, ty, tx)
    # Symbolic extents: the fixed grid.
    assert matmul_rule.thread_grid(256, 4, 4, None, 197) == (16, 16)


def _matmul_func(dtype: str, m: int = 33, n: int = 65, k: int = 17):
    from tvm import te

    a = te.placeholder((m, k), dtype, "a")
    b = te.placeholder((k, n), dtype, "b")
    r = te.reduce_axis((0, k), "r")
    c = te.compute((m, n), lambda i, j: te.sum(a[i, r] * b[r, j], axis=r), "c")
    return te.create_prim_func([a, b, c])


def test_simt_matmul_takes_float32_matmuls_on_cuda_only():
    import tvm
    from tvm import te

    from opforge.lower.target import CudaTarget

    rule = matmul_rule.SimtMatmul(ScheduleConfig(128, 4, "contiguous"))
    cuda = tvm.target.Target(CudaTarget().tvm_config())
    assert rule.apply(_matmul_func("float32"), cuda, False) is not None
    assert rule.apply(_matmul_func("float16"), cuda, False) is None  # DLight's (tensor cores where they fit)
    assert rule.apply(_matmul_func("float32"), tvm.target.Target({"kind": "llvm"}), False) is None
    x = te.placeholder((64, 64), "float32", "x")
    y = te.compute((64, 64), lambda i, j: x[i, j] * 2.0, "y")
    assert rule.apply(te.create_prim_func([x, y]), cuda, False) is None  # not a matmul


def test_tuned_plans_of_generated_matmuls_carry_the_register_tile():
    from opforge.lower.tvm_lower import lower_subgraph

    configs = [c for c in candidates() if c is not None]
    rng = np.random.default_rng(3)
    taken = 0
    for case in matmul_cases(seed=5, count=12):
        (sub,) = extract_nodes(case.model, [case.model.graph.node[0]])
        for k in rng.choice(len(configs), 2, replace=False):
            config = configs[int(k)]
            plan = lower_subgraph(sub, config=config)
            tiled = matmul_rule.carries_register_tile(plan.cuda_source, config)
            for launch in plan.launches:
                assert int(np.prod([int(b) for b in launch.block])) <= config.threads, (case.name, config)
            if min(case.rows, case.cols, case.depth) > 1:
                assert tiled, (case.name, config.label, plan.cuda_source[:2000])
                taken += 1
    assert taken >= 12


def test_untuned_plans_keep_dlight_matmul():
    from opforge.lower.tvm_lower import lower_subgraph

    case = next(c for c in matmul_cases(seed=0) if "attention" in c.name)
    (sub,) = extract_nodes(case.model, [case.model.graph.node[0]])
    plan = lower_subgraph(sub, config=None)
    assert not any(matmul_rule.carries_register_tile(plan.cuda_source, c) for c in candidates() if c is not None)


def test_length_one_contraction_reads_the_bias_once_under_every_configuration():
    """A Gemm with K = 1 and a bias, tuned: the spatial rule took the contraction (normalisation shows a length-1
    reduction as spatial) and merged its epilogue into it, so the bias became the init and was added again in the
    update (out = a*b + 2*beta*C; found by scripts/check_matmul_rule.py on the H100 under 4 of 4 configurations).
    Every configuration now leaves the contraction to the Fallback, which keeps the epilogue apart."""
    from opforge.examples.onnx_build import single_node_model
    from opforge.lower.tvm_lower import lower_subgraph

    model = single_node_model(
        "Gemm",
        [("a", "float32", [1, 2]), ("b", "float32", [3, 1]), ("c", "float32", [2, 1])],
        attrs={"transA": 1, "transB": 1, "alpha": 0.5, "beta": 0.75},
    )
    (sub,) = extract_nodes(model, [model.graph.node[0]])
    sources = {}
    for config in itertools.chain([None], candidates()):
        sources.setdefault(lower_subgraph(sub, config=config).cuda_source, config)
    c_pointer = f"{sub.model.graph.node[0].input[2]}_ptr["
    for source, config in sources.items():
        assert source.count(c_pointer) == 1, (config, source[-2500:])


@pytest.mark.parametrize(
    "equation, a_shape, b_shape",
    [
        ("bij,bjk->bik", [2, 33, 128], [2, 128, 255]),  # nvcc refused its pipelined tile at 50 KB before the cap
        ("bhqd,bhkd->bhqk", [2, 3, 197, 64], [2, 3, 197, 64]),
        ("ij,jk->ik", [300, 197], [197, 300]),
    ],
)
def test_every_configuration_fits_static_shared_memory(equation, a_shape, b_shape):
    """CUDA refuses a kernel declaring more than 48 KB of static shared memory; the K step is halved until the
    staged slices (rows padded as storage_align pads them, two buffers when pipelined) fit."""
    from opforge.examples.onnx_build import single_node_model
    from opforge.lower.tvm_lower import lower_subgraph

    model = single_node_model(
        "Einsum", [("a", "float32", a_shape), ("b", "float32", b_shape)], attrs={"equation": equation}
    )
    (sub,) = extract_nodes(model, [model.graph.node[0]])
    for config in {c.label: c for c in candidates() if c is not None}.values():
        source = lower_subgraph(sub, config=config).cuda_source
        for kernel in source.split('extern "C" __global__')[1:]:
            shared = sum(int(n) * 4 for n in re.findall(r"__shared__ alignas\(\d+\) float \w+\[(\d+)\];", kernel))
            assert 0 < shared <= matmul_rule.STATIC_SHARED_BYTES or "_shared_ptr" not in kernel, (config, shared)
