"""Schedule rules: long reductions that DLight's own rules decline are spread over threads and blocks
(opforge.lower.reduction_rule), not run serially by one thread per output."""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import TensorProto, helper

from opforge.extract.subgraph import extract_nodes


def _plan(model: onnx.ModelProto):
    from opforge.lower.tvm_lower import lower_subgraph

    return lower_subgraph(extract_nodes(model, list(model.graph.node))[0])


def _model(node, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph([node], "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _threads(launch) -> tuple[int, int]:
    grid = int(np.prod([int(g) for g in launch.grid]))
    block = int(np.prod([int(b) for b in launch.block]))
    return grid, block


def test_logsumexp_row_max_spreads_each_row_over_a_thread_block():
    # The row max (opforge's -inf max, which DLight's Reduction rule does not take) was one thread per row running
    # a 32768-long loop: 64 threads in a single block. Now the whole LogSumExp is one kernel (lower/kernels/
    # logsumexp.py): its block per row must still spread the row over many threads.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 32768])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    node = helper.make_node("ReduceLogSumExp", ["x", "axes"], ["y"], keepdims=1)
    plan = _plan(_model(node, [x], [y], [axes]))
    assert len(plan.launches) == 1, [lau.kernel for lau in plan.launches]
    first_max = plan.launches[0]
    grid, block = _threads(first_max)
    assert block >= 128, (first_max.grid, first_max.block)
    assert grid >= 64, (first_max.grid, first_max.block)  # at least one block per row
    # (rows of -inf or holding +inf: tests/test_fused_reductions.py checks the values)


def test_dynamicquantizelinear_min_max_is_not_one_thread():
    # The global min and max were one thread looping over all 4M elements.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024, 4096])
    outs = [
        helper.make_tensor_value_info("q", TensorProto.UINT8, [1024, 4096]),
        helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
        helper.make_tensor_value_info("z", TensorProto.UINT8, []),
    ]
    plan = _plan(_model(helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]), [x], outs))
    for kind in ("max", "min"):
        first = next(lau for lau in plan.launches if f"_{kind}_kernel" in lau.kernel)
        grid, block = _threads(first)
        assert grid >= 32 and block >= 128, (kind, first.grid, first.block)  # several blocks share the tensor


def test_plan_reduction_shapes():
    from opforge.lower.reduction_rule import plan_reduction

    assert plan_reduction(1000, 16, 1024) is None  # short: left to the fallback
    threads, chunks = plan_reduction(1, 1 << 22, 1024)
    assert threads >= 128 and chunks > 1  # a global reduction is split over blocks
    threads, chunks = plan_reduction(65536, 1024, 1024)
    assert chunks == 1  # enough outputs: one block each


def test_infinite_identity_max_is_rfactored():
    from tvm import s_tir, te, tirx

    from opforge.lower.kernels.reductions import reduce_te
    from opforge.lower.reduction_rule import register_infinite_reducers

    register_infinite_reducers()
    x = te.placeholder((8, 1024), "float32", name="x")
    func = te.create_prim_func([x, reduce_te(x, [1], False, "max")])
    sch = s_tir.Schedule(func)
    (block,) = [b for b in sch.get_child_blocks(sch.get_sblock("root"))]
    _, r = sch.get_loops(block)
    _, tx = sch.split(r, factors=[None, 128])
    rf = sch.rfactor(tx, 0)  # raised "No matched reducer" before the -inf reducer was registered
    assert rf is not None
    init = sch.get(block).init
    assert isinstance(init.value, tirx.FloatImm) and np.isneginf(init.value.value)


def test_tuned_block_size_reaches_row_reductions():
    """DLight's Reduction rule gives each row 1024 threads on CUDA; a tuning configuration's block size caps it
    (reduction_rule.CappedThreads), so the tuner has distinct candidates to measure for RMSNorm-like rows."""
    from opforge.core import expr
    from opforge.lower.tvm_lower import lower_subgraph
    from opforge.tune.space import ScheduleConfig

    scale = helper.make_tensor("s", TensorProto.FLOAT16, [4096], np.ones(4096, np.float16).tobytes(), raw=True)
    node = helper.make_node("RMSNormalization", ["x", "s"], ["y"])
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node], "g", [vi("x", TensorProto.FLOAT16, [512, 4096])], [vi("y", TensorProto.FLOAT16, [512, 4096])], [scale]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    sub = extract_nodes(model, list(model.graph.node))[0]
    block = {}
    for threads in (None, 256):
        config = None if threads is None else ScheduleConfig(threads, 4, "contiguous")
        (launch,) = lower_subgraph(sub, config=config).launches
        block[threads] = expr.evaluate(launch.block[0], {})
    assert block == {None: 1024, 256: 256}


def test_tuned_block_size_reaches_general_reductions():
    """DLight's GeneralReduction (a reduction and its epilogue in one kernel: softmax, group normalization) fixes
    256 threads per row on CUDA; a tuning configuration's block size replaces it (reduction_rule.RowThreads), so 64
    rows of 32768 can run on more than 64 x 256 threads."""
    from opforge.core import expr
    from opforge.lower.tvm_lower import lower_subgraph
    from opforge.tune.space import ScheduleConfig

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 32768])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 32768])
    model = _model(helper.make_node("Softmax", ["x"], ["y"], axis=-1), [x], [y])
    sub = extract_nodes(model, list(model.graph.node))[0]
    shapes = {}
    for threads in (None, 256, 1024):
        config = None if threads is None else ScheduleConfig(threads, 1, "strided")
        (launch,) = lower_subgraph(sub, config=config).launches
        shapes[threads] = (expr.evaluate(launch.grid[0], {}), expr.evaluate(launch.block[0], {}))
    assert shapes == {None: (64, 256), 256: (64, 256), 1024: (64, 1024)}


def test_plan_with_too_many_launches_is_refused(monkeypatch):
    """A lowering that unrolls a loop over a tensor's elements into thousands of launches (TVM's
    NegativeLogLikelihoodLoss over a static (7, 33, 33) target: 7627) is refused rather than built: its launcher
    alone kept cc1plus busy for 40 minutes. The limit is KernelPlan's MAX_LAUNCHES; here lowered to the plan's own
    launch count (accepted) and one below it (refused)."""
    import pytest

    from opforge.core.errors import LoweringError
    from opforge.lower import tvm_lower

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 4096])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 1])
    model = _model(helper.make_node("ReduceLogSumExp", ["x"], ["y"], axes=[1], keepdims=1), [x], [y])
    sub = extract_nodes(model, list(model.graph.node))[0]
    launches = len(tvm_lower.lower_subgraph(sub).launches)
    assert launches >= 1
    monkeypatch.setattr(tvm_lower, "MAX_LAUNCHES", launches)
    assert len(tvm_lower.lower_subgraph(sub).launches) == launches
    monkeypatch.setattr(tvm_lower, "MAX_LAUNCHES", launches - 1)
    with pytest.raises(LoweringError, match="kernel launches"):
        tvm_lower.lower_subgraph(sub)


def test_contiguous_runs_of_8_compile_for_64_bit_values(tmp_path):
    """A tuned contiguous layout of 8 elements per thread vectorised all 8: TVM's CUDA for 8 lanes of a 64-bit
    value (int64 data here; int64 index math in AffineGrid, packed float pairs in LayerNormalization) calls
    make_longlong4 with 8 arguments, which nvcc refuses (6 fuzz cases under tuned configurations failed to build).
    Runs of 8 are now two vectors of 4, and compile."""
    from opforge.build.nvcc import compile_fatbin
    from opforge.core.schedule import ScheduleConfig
    from opforge.lower.tvm_lower import lower_subgraph

    x = helper.make_tensor_value_info("x", TensorProto.INT64, [64, 1000])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [64, 1000])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [64, 1000])
    model = _model(helper.make_node("Add", ["x", "y"], ["s"]), [x, y], [s])
    sub = extract_nodes(model, list(model.graph.node))[0]
    plan = lower_subgraph(sub, config=ScheduleConfig(128, 8, "contiguous"))
    source = tmp_path / "plan.cu"
    source.write_text(plan.cuda_source)
    compile_fatbin(source, tmp_path / "plan.fatbin")  # raises BuildError naming nvcc's message
    assert "longlong4" in plan.cuda_source  # vectors of 4 (the test would pass vacuously with none)


def test_contiguous_runs_read_bool_tensors_element_by_element():
    """TVM's CUDA code reads a vector of 4 bools as a ushort4 (8 bytes for 4 one-byte values): wrong bytes, and
    at a 4-byte stride a misaligned address that killed the CUDA context in the tuned fuzz run (a TensorScatter
    with a bool mask, then every later case of the process). A block touching a bool tensor runs its elements
    unrolled instead of as a vector."""
    from opforge.core.schedule import ScheduleConfig
    from opforge.lower.tvm_lower import lower_subgraph

    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [64, 1000])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 1000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 1000])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [64, 1000])
    model = _model(helper.make_node("Where", ["c", "x", "y"], ["out"]), [c, x, y], [out])
    sub = extract_nodes(model, list(model.graph.node))[0]
    source = lower_subgraph(sub, config=ScheduleConfig(256, 4, "contiguous")).cuda_source
    body = source[source.index('extern "C" __global__ void __launch_bounds__') :]
    assert "ushort4" not in body and "ushort2" not in body, body[:3000]
    assert re.search(r"\w+_ptr\[", body)  # element reads are there (the check would pass on an empty kernel)


def test_untuned_matmul_epilogue_reads_a_bool_mask_element_by_element():
    """DLight's Matmul rule vectorises its epilogue 2 lanes wide; with a bool mask in the epilogue (a causal mask's
    `Where` after the score matmul, as FlexAttention's import has) TVM's CUDA code read the 2 bools as a ushort2
    (4 bytes for 2): 2 conformance cases came out wrong on the H100. Every compiled function's vectorised loops
    around a bool access now run unrolled (opforge.lower.bool_vectors), whichever rule scheduled them."""
    from opforge.extract.subgraph import extract_groups
    from opforge.lower.tvm_lower import lower_subgraph

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4, 32, 16])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 4, 16, 32])
    mask = helper.make_tensor_value_info("mask", TensorProto.BOOL, [32, 32])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4, 32, 32])
    fill = helper.make_tensor("fill", TensorProto.FLOAT, [], [-1e9])
    nodes = [helper.make_node("MatMul", ["a", "b"], ["s"]), helper.make_node("Where", ["mask", "s", "fill"], ["out"])]
    graph = helper.make_graph(nodes, "g", [a, b, mask], [out], initializer=[fill])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    (sub,) = extract_groups(model, [list(model.graph.node)])
    source = lower_subgraph(sub).cuda_source
    assert not re.search(r"\bu?short[2-4]\b", source), source[:3000]
    assert "float2" in source  # the epilogue's float stores stay vectorised: only the bool accesses run unrolled
