"""Checking an executor of a plan (the launcher or the plugin harness) against the ONNX reference."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import onnx

from opforge.core import expr
from opforge.core.kernel_plan import KernelPlan
from opforge.verify.compare import compare
from opforge.verify.inputs import make_inputs
from opforge.verify.reference import reference_outputs

# Two runs, outputs and workspace filled with different bytes first: an element the kernels never write cannot
# equal the reference under both (0xFF is NaN for every float type).
POISONS = (0xFF, 0x5A)

# An executor: (inputs, poison byte) -> outputs of each execution context it ran ([[out0, out1, ...], ...]).
Runner = Callable[[list[np.ndarray], int], list[list[np.ndarray]]]


def input_shapes(plan: KernelPlan, dims: dict[str, int]) -> list[tuple[int, ...]]:
    missing = {d.name for d in plan.dims} - set(dims)
    if missing:
        raise ValueError(f"no value given for dimension(s) {sorted(missing)}")
    return [tuple(expr.evaluate(e, dims) for e in spec.shape) for spec in plan.inputs]


def check_once(
    plan: KernelPlan, model: onnx.ModelProto, run: Runner, dims: dict[str, int], rng: np.random.Generator
) -> dict:
    shapes = input_shapes(plan, dims)
    inputs = make_inputs(model, shapes, rng)
    t0 = time.perf_counter()
    refs, ref_name = reference_outputs(model, inputs)
    t_ref = time.perf_counter() - t0
    row: dict = {
        "dims": dims,
        "input_shapes": [list(s) for s in shapes],
        "reference": ref_name,
        "reference_s": round(t_ref, 3),
        "outputs": [],
    }
    ok = True
    contexts = 0
    for poison in POISONS:
        results = run(inputs, poison)
        contexts = len(results)
        for ctx, outs in enumerate(results):
            for k, (spec, out, ref) in enumerate(zip(plan.outputs, outs, refs)):
                c = compare(out, ref, spec.dtype)
                ok &= c.ok
                if poison == POISONS[0] and ctx == 0:
                    row["outputs"].append(
                        {"name": spec.name, "dtype": spec.dtype, "shape": list(ref.shape), **c.as_dict()}
                    )
                elif not c.ok:
                    row["outputs"][k].update({"ok": False, f"bad_poison{poison:#x}_context{ctx}": c.bad})
    row["contexts"] = contexts
    row["ok"] = bool(ok)
    return row


def check_plan_on_gpu(
    plan: KernelPlan, model: onnx.ModelProto, fatbin: bytes, dims_list: list[dict[str, int]], rng: np.random.Generator
) -> list[dict]:
    """`check_once` of a plan's fatbin through the cuda-python launcher at each of `dims_list` (a launch failure is
    a failed run with its error, not an exception)."""
    from opforge.runtime.launcher import PlanRunner

    runner = PlanRunner(plan, fatbin)
    runs = []
    try:
        for dims in dims_list:
            try:
                runs.append(check_once(plan, model, runner.run_contexts, dims, rng))
            except Exception as e:  # a launch failure is a result too
                runs.append({"dims": dims, "ok": False, "error": f"{type(e).__name__}: {e}"})
    finally:
        runner.close()
    return runs
