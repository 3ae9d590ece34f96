"""The built-in example model: a small feature-hashing head whose bit-level ops TensorRT's ONNX parser rejects
(BitwiseAnd, BitwiseXor, BitwiseNot, BitShift, Compress: rejections checked with the TensorRT-RTX parser), between
ops TensorRT runs itself (MatMul, Add, Relu, Cast). The batch dimension is symbolic."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REJECTED_OP_TYPES = ("BitwiseAnd", "BitwiseXor", "BitwiseNot", "BitShift", "Compress")


def example_model() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    inits = [
        numpy_helper.from_array(rng.uniform(-0.5, 0.5, (64, 32)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([0x0F0F], np.int32), "mask"),
        numpy_helper.from_array(np.array([3], np.uint8), "shift"),
        numpy_helper.from_array(rng.random(32) < 0.5, "keep"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["proj"], name="proj"),
        helper.make_node("Relu", ["proj"], ["act"], name="act"),
        helper.make_node("Compress", ["act", "keep"], ["selected"], name="select_features", axis=1),
        helper.make_node("BitwiseAnd", ["ids", "mask"], ["masked"], name="mask_ids"),
        helper.make_node("BitwiseXor", ["masked", "ids"], ["mixed"], name="mix_ids"),
        helper.make_node("BitwiseNot", ["mixed"], ["hashed"], name="invert_ids"),
        helper.make_node("Cast", ["hashed"], ["hashed_f"], name="hash_to_float", to=TensorProto.FLOAT),
        helper.make_node("BitShift", ["codes", "shift"], ["shifted"], name="shift_codes", direction="LEFT"),
    ]
    graph = helper.make_graph(
        nodes,
        "opforge_example",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64]),
            helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", 16]),
            helper.make_tensor_value_info("codes", TensorProto.UINT8, ["batch", 8]),
        ],
        [
            helper.make_tensor_value_info("selected", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("hashed_f", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("shifted", TensorProto.UINT8, None),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="opforge-example")
    model.ir_version = 9
    inferred = onnx.shape_inference.infer_shapes(model)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    onnx.checker.check_model(model)
    return model
