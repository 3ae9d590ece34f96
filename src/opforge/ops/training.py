"""ai.onnx.preview.training optimizers (Adagrad, Momentum, Adam): no ONNX function body and no TVM converter, so
each is written in ONNX ops TVM has, following the operator documentation. Inputs: R, T, then one group of
tensors per optimized tensor."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

TRAINING = "ai.onnx.preview.training"


def _adagrad(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    n = (len(node.input) - 2) // 3
    r, t = node.input[0], e.to_float(node.input[1])
    rate = e.op("Div", r, e.op("Add", e.const(1.0), e.op("Mul", t, e.const(a.get("decay_factor", 0.0)))))
    for i in range(n):
        x, g, h = node.input[2 + i], node.input[2 + n + i], node.input[2 + 2 * n + i]
        g_reg = e.op("Add", e.op("Mul", e.const(a.get("norm_coefficient", 0.0)), x), g)
        h_new = e.op("Add", h, e.op("Mul", g_reg, g_reg), out=node.output[n + i])
        h_adapt = e.op("Add", e.op("Sqrt", h_new), e.const(a.get("epsilon", 1e-6)))
        e.op("Sub", x, e.op("Div", e.op("Mul", rate, g_reg), h_adapt), out=node.output[i])
    return True


def _momentum(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
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
    return True


def _adam(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
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
    return True


RULES = [
    OpRule(("Adagrad",), TRAINING, "decompose", "Adagrad update in ONNX arithmetic", rewrite=_adagrad),
    OpRule(("Momentum",), TRAINING, "decompose", "Momentum (standard/Nesterov) in ONNX arithmetic", rewrite=_momentum),
    OpRule(("Adam",), TRAINING, "decompose", "Adam with bias correction in ONNX arithmetic", rewrite=_adam),
]
