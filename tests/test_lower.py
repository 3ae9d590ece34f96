"""Lowering every kernel case with TVM and compiling its kernels with nvcc: everything but the GPU run."""

import json
import re
from pathlib import Path

import pytest

from opforge.build.nvcc import compile_fatbin, find_nvcc, gencode_flags, parallel
from opforge.core import expr
from opforge.core.kernel_plan import PLAN_VERSION, KernelPlan
from opforge.examples.kernel_cases import CASES

REQUIRED = {
    "OneHot",
    "GatherND",
    "ScatterND",
    "Resize",
    "ReduceMax",
    "LayerNormalization",
    "Einsum",
    "Erf",
    "BitwiseAnd",
    "CumSum",
    "Compress",
}


def test_at_least_15_op_types_including_the_required_ones(planned_cases):
    lowered = {case.op_type for case, _, plan in planned_cases.values() if isinstance(plan, KernelPlan)}
    assert lowered >= REQUIRED
    assert len(lowered) >= 15


def test_data_dependent_shape_is_a_size_tensor(planned_cases):
    """NonZero's [rank, K]: K is the value of a 0-d int32 output the kernel writes, at most the input's size."""
    _, _, plan = planned_cases["nonzero"]
    assert isinstance(plan, KernelPlan), plan
    (size,) = plan.sizes
    assert size.output == 1 == plan.nb_onnx_outputs and plan.outputs[1].shape == [] and plan.outputs[1].dtype == "int32"
    assert plan.outputs[0].shape == ["2", size.name] and expr.evaluate(size.upper, {"B": 3}) == 48


def test_multi_kernel_plan_with_workspace(planned_cases):
    """Some plan passes intermediates between its kernels through the workspace (GatherND did until its index
    arithmetic was fused into the gather)."""
    multi = [
        plan
        for _, _, plan in planned_cases.values()
        if isinstance(plan, KernelPlan)
        and len(plan.launches) >= 2
        and any(a.kind == "workspace" for launch in plan.launches for a in launch.args)
    ]
    assert multi
    for plan in multi:
        assert expr.evaluate(plan.workspace, {v: 7 for v in expr.free_vars(plan.workspace)}) > 0


@pytest.mark.parametrize("name", [c.name for c in CASES if c.name != "nonzero"])
def test_plan_is_consistent_and_round_trips(planned_cases, name):
    case, _sub, plan = planned_cases[name]
    again = KernelPlan.from_json(plan.to_json())
    assert again == plan
    assert json.loads(plan.to_json())["version"] == PLAN_VERSION
    # Every expression only uses the plan's dimensions, and evaluates at each batch size.
    dims = {d.name for d in plan.dims}
    for b in case.batches:
        env = {d: b for d in dims}
        for launch in plan.launches:
            assert all(expr.evaluate(g, env) >= 0 for g in launch.grid)
            assert 0 < expr.evaluate(launch.block[0], env) <= 1024
            for a in launch.args:
                assert expr.free_vars(a.value or a.offset) <= dims
        assert expr.evaluate(plan.workspace, env) >= 0
    kernels = {launch.kernel for launch in plan.launches}
    assert all(k.startswith(f"opf_{plan.key[:10]}_") for k in kernels)
    # each launched kernel is defined (a __global__ function of that name) in the plan's source
    defined = set(re.findall(r"__global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(", plan.cuda_source))
    assert kernels <= defined, kernels - defined


def test_kernels_compile_with_nvcc(planned_cases, tmp_path: Path):
    find_nvcc()
    plans = [p for _, _, p in planned_cases.values() if isinstance(p, KernelPlan)]

    def build(plan: KernelPlan) -> Path:
        src = tmp_path / f"{plan.key}.cu"
        src.write_text(plan.cuda_source)
        return compile_fatbin(src, tmp_path / f"{plan.key}.fatbin")

    fatbins = parallel(plans, build)
    for fb in fatbins:
        assert fb.read_bytes()[:4] == bytes.fromhex("50ed55ba")  # fatbin magic 0xBA55ED50, little-endian
    # SASS for Hopper plus PTX of the same architecture, so newer GPUs can JIT it.
    assert gencode_flags("sm_90") == ["-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_90,code=compute_90"]
