import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from opforge.core.errors import OpforgeError, UsageError
from opforge.extract import extract_nodes, load_model, select_nodes
from opforge.extract.subgraph import parse_shape_arg


def _chain_model(static_batch: bool = False, with_shapes: bool = True) -> onnx.ModelProto:
    """x -> Shape -> Gather(1) = depth (constant-foldable when x is static) ; OneHot(idx, depth, values)."""
    x_shape = [4, 10] if static_batch else ["N", 10]
    nodes = [
        helper.make_node("Shape", ["x"], ["xs"], name="shape"),
        helper.make_node("Gather", ["xs", "one"], ["depth"], name="pick", axis=0),
        helper.make_node(
            "Constant", [], ["vals"], name="vals", value=numpy_helper.from_array(np.array([0.5, 3.0], np.float32))
        ),
        helper.make_node("OneHot", ["idx", "depth", "vals"], ["y"], name="onehot", axis=-1),
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape if with_shapes else None),
            helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"] if with_shapes else None),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, None),
        ],
        initializer=[numpy_helper.from_array(np.array(1, np.int64), "one")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_select_by_name_type_and_map():
    m = _chain_model()
    assert [n.name for n in select_nodes(m, node_names=["relu"])] == ["relu"]
    assert [n.name for n in select_nodes(m, node_types=["OneHot"])] == ["onehot"]
    assert [n.name for n in select_nodes(m, plugin_name_dict={"onehot": "MyOneHot"})] == ["onehot"]


def test_missing_node_is_one_clear_error():
    with pytest.raises(UsageError, match="node 'nope' is not in the model"):
        select_nodes(_chain_model(), node_names=["nope"])


def test_constants_are_folded_and_kept_as_values():
    m = _chain_model(static_batch=True)
    sub = extract_nodes(m, select_nodes(m, node_names=["onehot"]))[0]
    assert set(sub.constant_inputs) == {1, 2}
    assert int(sub.constant_inputs[1]) == 10  # Shape(x)[1] folded
    np.testing.assert_array_equal(sub.constant_inputs[2], [0.5, 3.0])  # Constant node
    assert [i.name for i in sub.model.graph.input] == ["in0"]
    onnx.checker.check_model(sub.model)


def test_symbolic_dims_stay_symbolic_and_dynamic_batch():
    m = _chain_model()
    sub = extract_nodes(m, select_nodes(m, node_names=["relu"]))[0]
    dims = sub.model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 10
    static = _chain_model(static_batch=True)
    sub = extract_nodes(static, select_nodes(static, node_names=["relu"]), dynamic_batch=True)[0]
    assert sub.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_identical_nodes_share_a_key():
    m = _chain_model()
    m.graph.node.append(helper.make_node("Relu", ["x"], ["r2"], name="relu2"))
    m.graph.output.append(helper.make_tensor_value_info("r2", TensorProto.FLOAT, None))
    a, b = extract_nodes(m, select_nodes(m, node_names=["relu", "relu2"]))
    assert a.key == b.key


def test_input_without_shape_names_the_tensor_and_user_shapes_fix_it():
    m = _chain_model(with_shapes=False)
    with pytest.raises(OpforgeError, match="input 'x' has no shape"):
        extract_nodes(m, select_nodes(m, node_names=["relu"]))
    sub = extract_nodes(m, select_nodes(m, node_names=["relu"]), parse_shape_arg("x:batchx10,idx:batch"))[0]
    dims = sub.model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 10


def test_bad_files(tmp_path):
    with pytest.raises(OpforgeError, match="no such model file"):
        load_model(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x12\x34 this is not protobuf")
    with pytest.raises(OpforgeError, match="not a readable ONNX model"):
        load_model(bad)
