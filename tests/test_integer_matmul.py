"""MatMulInteger of 8-bit operands as packed bytes multiplied with __dp4a (lower/kernels/integer_matmul.py): exact
against ONNX's reference on the CPU for every signedness and zero-point form, and on the GPU path a plan whose GEMM
calls __dp4a."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from opforge.extract.subgraph import NodeSubgraph

_TYPES = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}


def _model(a, b, zeros: dict):
    vi = helper.make_tensor_value_info
    inputs = [vi("a", _TYPES[a.dtype.name], list(a.shape)), vi("b", _TYPES[b.dtype.name], list(b.shape))]
    names = ["a", "b"]
    inits = []
    for key in ("az", "bz"):
        if key in zeros:
            inits.append(numpy_helper.from_array(zeros[key], key))
            names.append(key)
        elif key == "az" and "bz" in zeros:
            names.append("")
    node = helper.make_node("MatMulInteger", names, ["y"])
    out = vi("y", TensorProto.INT32, [a.shape[0], b.shape[1]])
    graph = helper.make_graph([node], "g", inputs, [out], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])


def _draw(rng, dtype: str, shape):
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
    if x.size >= 2:  # the extremes, where a wrong shift or sign shows (a scalar keeps its random value)
        x.flat[0], x.flat[-1] = info.min, info.max
    return x


@pytest.mark.parametrize("a_type,b_type", [("uint8", "uint8"), ("int8", "int8"), ("uint8", "int8"), ("int8", "uint8")])
@pytest.mark.parametrize("zero_form", ["none", "scalar", "vector"])
def test_matches_onnx_reference_exactly(a_type, b_type, zero_form):
    from opforge.lower.cpu_run import run_on_cpu

    rng = np.random.default_rng(zlib.crc32(f"{a_type} {b_type} {zero_form}".encode()))  # replayable
    m, k, n = 7, 36, 5
    a, b = _draw(rng, a_type, (m, k)), _draw(rng, b_type, (k, n))
    zeros = {}
    if zero_form == "scalar":
        zeros = {"az": _draw(rng, a_type, ()), "bz": _draw(rng, b_type, ())}
    elif zero_form == "vector":
        zeros = {"az": _draw(rng, a_type, (m,)), "bz": _draw(rng, b_type, (n,))}
    model = _model(a, b, zeros)
    # ONNX's definition; its reference evaluator takes scalar zero points only (a per-row one fails to broadcast)
    za = zeros.get("az", np.zeros((), a.dtype)).astype(np.int64).reshape(-1, 1) if zeros else 0
    zb = zeros.get("bz", np.zeros((), b.dtype)).astype(np.int64).reshape(1, -1) if zeros else 0
    ref = ((a.astype(np.int64) - za) @ (b.astype(np.int64) - zb)).astype(np.int32)
    if zero_form != "vector":
        np.testing.assert_array_equal(ReferenceEvaluator(model).run(None, {"a": a, "b": b})[0], ref)
    sub = NodeSubgraph("n", "MatMulInteger", model, ["a", "b"], {}, ["y"])
    (got,) = run_on_cpu(sub, [a, b])
    np.testing.assert_array_equal(got, ref)


def test_gpu_plan_multiplies_packed_bytes():
    from opforge.lower.tvm_lower import lower_subgraph

    rng = np.random.default_rng(5)
    a, b = _draw(rng, "uint8", (256, 512)), _draw(rng, "uint8", (512, 256))
    model = _model(a, b, {"az": np.array(128, np.uint8), "bz": np.array(3, np.uint8)})
    plan = lower_subgraph(NodeSubgraph("n", "MatMulInteger", model, ["a", "b"], {}, ["y"]))
    assert "__dp4a" in plan.cuda_source
    # K not a multiple of 4: TVM's int32 GEMM, no packed words
    a, b = _draw(rng, "uint8", (256, 514)), _draw(rng, "uint8", (514, 256))
    plan = lower_subgraph(NodeSubgraph("n", "MatMulInteger", _model(a, b, {}), ["a", "b"], {}, ["y"]))
    assert "__dp4a" not in plan.cuda_source
