"""Ops TVM's ONNX frontend lacks, or takes only in some forms (Pow of one float type, OneHot with constant values),
and ONNX gives no function body for, written as ONNX ops it has.

Each decomposition follows the op's definition in the ONNX operator documentation; the conformance cases of the op
check it. The plugin still implements the original node: only its kernels come from the decomposed form.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TRAINING = "ai.onnx.preview.training"
ML = "ai.onnx.ml"


class _Emitter:
    """Appends nodes and constants to a graph, naming each new tensor after the node being replaced."""

    def __init__(self, m: onnx.ModelProto, node: onnx.NodeProto, elem: int):
        self.m, self.prefix, self.elem, self.nodes, self.k = m, f"{node.output[0]}__opf", elem, [], 0

    def _name(self) -> str:
        self.k += 1
        return f"{self.prefix}{self.k}"

    def const(self, value: float, elem: int | None = None) -> str:
        name = self._name()
        dtype = helper.tensor_dtype_to_np_dtype(elem or self.elem)
        self.m.graph.initializer.append(numpy_helper.from_array(np.array(value, dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        out = out or self._name()
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def to_float(self, x: str) -> str:
        return self.op("Cast", x, to=self.elem)

    def opset(self) -> int:
        """The model's default-domain opset: the form of the ops emitted depends on it."""
        return next((o.version for o in self.m.opset_import if o.domain in ("", "ai.onnx")), 1)


def attrs(node: onnx.NodeProto) -> dict:
    """The node's attributes as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def elem_types(m: onnx.ModelProto) -> dict[str, int]:
    """The ONNX element type of every tensor the graph declares (inputs, value_info, outputs, initializers)."""
    seen = [*m.graph.input, *m.graph.value_info, *m.graph.output]
    types = {vi.name: vi.type.tensor_type.elem_type for vi in seen}
    types.update({t.name: t.data_type for t in m.graph.initializer})
    return types


# -- ai.onnx.preview.training optimizers: inputs R, T, then one group of tensors per optimized tensor ----------------
def _adagrad(e: _Emitter, node: onnx.NodeProto, a: dict) -> None:
    n = (len(node.input) - 2) // 3
    r, t = node.input[0], e.to_float(node.input[1])
    rate = e.op("Div", r, e.op("Add", e.const(1.0), e.op("Mul", t, e.const(a.get("decay_factor", 0.0)))))
    for i in range(n):
        x, g, h = node.input[2 + i], node.input[2 + n + i], node.input[2 + 2 * n + i]
        g_reg = e.op("Add", e.op("Mul", e.const(a.get("norm_coefficient", 0.0)), x), g)
        h_new = e.op("Add", h, e.op("Mul", g_reg, g_reg), out=node.output[n + i])
        h_adapt = e.op("Add", e.op("Sqrt", h_new), e.const(a.get("epsilon", 1e-6)))
        e.op("Sub", x, e.op("Div", e.op("Mul", rate, g_reg), h_adapt), out=node.output[i])


def _momentum(e: _Emitter, node: onnx.NodeProto, a: dict) -> None:
    n = (len(node.input) - 2) // 3
    r, t = node.input[0], node.input[1]
    alpha, beta = e.const(a["alpha"]), a["beta"]
    started = e.op("Greater", t, e.const(0, TensorProto.INT64))
    beta_adj = e.op("Where", started, e.const(beta), e.const(1.0))  # the first step takes the whole gradient
    nesterov = a.get("mode", b"standard") in (b"nesterov", "nesterov")
    for i in range(n):
        x, g, v = node.input[2 + i], node.input[2 + n + i], node.input[2 + 2 * n + i]
        g_reg = e.op("Add", e.op("Mul", e.const(a.get("norm_coefficient", 0.0)), x), g)
        v_new = e.op("Add", e.op("Mul", alpha, v), e.op("Mul", beta_adj, g_reg), out=node.output[n + i])
        step = e.op("Add", g_reg, e.op("Mul", alpha, v_new)) if nesterov else v_new
        e.op("Sub", x, e.op("Mul", r, step), out=node.output[i])


def _adam(e: _Emitter, node: onnx.NodeProto, a: dict) -> None:
    n = (len(node.input) - 2) // 4
    r, t = node.input[0], node.input[1]
    alpha, beta = a.get("alpha", 0.9), a.get("beta", 0.999)
    tf = e.to_float(t)
    one = e.const(1.0)
    # Bias correction from the second step on: R * sqrt(1 - beta^T) / (1 - alpha^T).
    corrected = e.op(
        "Div",
        e.op("Mul", r, e.op("Sqrt", e.op("Sub", one, e.op("Pow", e.const(beta), tf)))),
        e.op("Sub", one, e.op("Pow", e.const(alpha), tf)),
    )
    r_adj = e.op("Where", e.op("Greater", t, e.const(0, TensorProto.INT64)), corrected, r)
    for i in range(n):
        x, g = node.input[2 + i], node.input[2 + n + i]
        v, h = node.input[2 + 2 * n + i], node.input[2 + 3 * n + i]
        g_reg = e.op("Add", e.op("Mul", e.const(a.get("norm_coefficient", 0.0)), x), g)
        v_new = e.op(
            "Add", e.op("Mul", e.const(alpha), v), e.op("Mul", e.const(1 - alpha), g_reg), out=node.output[n + i]
        )
        h_new = e.op(
            "Add",
            e.op("Mul", e.const(beta), h),
            e.op("Mul", e.const(1 - beta), e.op("Mul", g_reg, g_reg)),
            out=node.output[2 * n + i],
        )
        h_sqrt = e.op("Add", e.op("Sqrt", h_new), e.const(a.get("epsilon", 1e-6)))
        x_new = e.op("Sub", x, e.op("Mul", r_adj, e.op("Div", v_new, h_sqrt)))
        e.op("Mul", e.const(1 - a.get("norm_coefficient_post", 0.0)), x_new, out=node.output[i])


# -- ai.onnx.ml ------------------------------------------------------------------------------------------------------
def _binarizer(e: _Emitter, node: onnx.NodeProto, a: dict) -> None:
    x = node.input[0]
    above = e.op("Greater", x, e.const(a.get("threshold", 0.0)))
    e.op("Where", above, e.const(1.0), e.const(0.0), out=node.output[0])


def _array_feature_extractor(e: _Emitter, node: onnx.NodeProto, _a: dict) -> None:
    e.op(
        "Gather",
        node.input[0],
        e.op("Reshape", node.input[1], e.const([-1], TensorProto.INT64)),
        axis=-1,
        out=node.output[0],
    )


# -- ai.onnx ---------------------------------------------------------------------------------------------------------
def _bool_reduce(e: _Emitter, node: onnx.NodeProto, a: dict) -> None:
    """ReduceMax/ReduceMin of bool (TVM has no extreme values for bool): through uint8, whose identities 0 and 255
    give ONNX's False and True over an empty set."""
    x = e.op("Cast", node.input[0], to=TensorProto.UINT8)
    reduced = e.op(node.op_type, x, *node.input[1:], **a)
    e.op("Cast", reduced, to=TensorProto.BOOL, out=node.output[0])


def _lp_normalization(e: _Emitter, node: onnx.NodeProto, a: dict) -> None:
    """x / ||x||_p along `axis` (ONNX allows p = 1 or 2), the norm kept as a dimension of size 1; 0 where the norm
    is 0, as ONNX's reference gives (rather than 0/0)."""
    op, axis = ("ReduceL1" if a.get("p", 2) == 1 else "ReduceL2"), a.get("axis", -1)
    x = node.input[0]
    if e.opset() >= 18:  # reductions take their axes as an input from opset 18
        norm = e.op(op, x, e.const([axis], TensorProto.INT64), keepdims=1)
    else:
        norm = e.op(op, x, axes=[axis], keepdims=1)
    zero = e.const(0.0)
    e.op("Where", e.op("Equal", norm, zero), zero, e.op("Div", x, norm), out=node.output[0])


def _mixed_pow(e: _Emitter, node: onnx.NodeProto, _a: dict) -> None:
    """Pow whose exponent's type differs from the base's, or of an integer base (TVM's power is float-only and wants
    one type). The result has the base's type. A float base takes the exponent in its type. An integer base goes
    through float64 and back with a truncating Cast, as ONNX's reference (NumPy's power, then astype) does; results
    within 1e-9 of an integer snap to it first, so that an exact power off by an ulp does not truncate to one less."""
    x, y = node.input
    base = elem_types(e.m)[x]
    if base in _FLOATS:
        e.op("Pow", x, e.op("Cast", y, to=base), out=node.output[0])
        return
    f64 = TensorProto.DOUBLE
    r = e.op("Pow", e.op("Cast", x, to=f64), e.op("Cast", y, to=f64))
    nearest = e.op("Round", r)
    tol = e.op("Mul", e.op("Max", e.op("Abs", r), e.const(1.0, f64)), e.const(1e-9, f64))
    exact = e.op("LessOrEqual", e.op("Abs", e.op("Sub", r, nearest)), tol)
    e.op("Cast", e.op("Where", exact, nearest, r), to=base, out=node.output[0])


def _onehot(e: _Emitter, node: onnx.NodeProto, a: dict) -> None:
    """OneHot whose `values` arrive at run time (TVM's frontend wants them constant): on where the index, made
    non-negative by adding depth, equals the class along `axis`, off elsewhere (out-of-range indices match none)."""
    indices, depth, values = node.input
    rank = next(
        len(vi.type.tensor_type.shape.dim) for vi in [*e.m.graph.input, *e.m.graph.value_info] if vi.name == indices
    )
    axis = a.get("axis", -1)
    axis = axis + rank + 1 if axis < 0 else axis
    i64 = TensorProto.INT64
    n = e.op("Cast", e.op("Reshape", depth, e.const([], i64)), to=i64)  # depth: a scalar or one element
    idx = e.op("Cast", indices, to=i64)
    idx = e.op("Where", e.op("Less", idx, e.const(0, i64)), e.op("Add", idx, n), idx)
    # The classes along `axis`, against the indices with a unit dimension there.
    classes = e.op(
        "Reshape", e.op("Range", e.const(0, i64), n, e.const(1, i64)), e.const([-1] + [1] * (rank - axis), i64)
    )
    new_axis = {"axes": [axis]} if e.opset() < 13 else {}  # an input from opset 13
    idx = e.op("Unsqueeze", idx, *([] if new_axis else [e.const([axis], i64)]), **new_axis)
    on, off = (e.op("Gather", values, e.const(k, i64)) for k in (1, 0))
    e.op("Where", e.op("Equal", idx, classes), on, off, out=node.output[0])


_DECOMPOSE: dict[tuple[str, str], Callable] = {
    (TRAINING, "Adagrad"): _adagrad,
    (TRAINING, "Momentum"): _momentum,
    (TRAINING, "Adam"): _adam,
    (ML, "Binarizer"): _binarizer,
    (ML, "ArrayFeatureExtractor"): _array_feature_extractor,
    ("", "LpNormalization"): _lp_normalization,
}


def decompose(m: onnx.ModelProto) -> bool:
    """Rewrite, in place, every node of the model that has a decomposition; True if any was rewritten."""
    types = elem_types(m)
    constants = {t.name for t in m.graph.initializer}
    out, changed = [], False
    for node in m.graph.node:
        f = _DECOMPOSE.get((node.domain, node.op_type))
        if node.op_type in ("ReduceMax", "ReduceMin") and types.get(node.input[0]) == TensorProto.BOOL:
            f = _bool_reduce
        if node.op_type == "OneHot" and node.domain in ("", "ai.onnx") and node.input[2] not in constants:
            f = _onehot
        if node.op_type == "Pow" and node.domain in ("", "ai.onnx"):
            tx, ty = types.get(node.input[0]), types.get(node.input[1])
            if tx is not None and ty is not None and (tx != ty or tx not in _FLOATS):
                f = _mixed_pow
        if f is None:
            out.append(node)
            continue
        # The float type the op computes in: its first float input's.
        elem = next((types[i] for i in node.input if types.get(i) in _FLOATS), TensorProto.FLOAT)
        e = _Emitter(m, node, elem)
        f(e, node, attrs(node))
        out.extend(e.nodes)
        changed = True
    if changed:
        del m.graph.node[:]
        m.graph.node.extend(out)
        if not any(o.domain in ("", "ai.onnx") for o in m.opset_import):
            m.opset_import.append(helper.make_opsetid("", onnx.defs.onnx_opset_version()))
    return changed


_FLOATS = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)
