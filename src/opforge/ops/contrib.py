"""onnxruntime's com.microsoft ops that its transformer optimizer and quantizer write into real models (FastGelu,
BiasGelu, Gelu, QuickGelu, BiasAdd, BiasSplitGelu, SkipLayerNormalization, SkipSimplifiedLayerNormalization,
FusedMatMul, DynamicQuantizeMatMul). TensorRT's parser and TVM's frontend know none of them; each is written in
ONNX ops following onnxruntime's CPU kernels (tests/test_contrib_ops.py compares with onnxruntime on random
inputs). A form a rule does not cover (FusedMatMul's batch transposes, ...) keeps the node, so lowering names it."""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

MS = "com.microsoft"
I64 = TensorProto.INT64


def _opt(node: onnx.NodeProto, pos: int) -> str | None:
    return node.input[pos] if len(node.input) > pos and node.input[pos] else None


def _gelu_erf(e: Emitter, x: str, out: str | None = None) -> str:
    """0.5 * x * (1 + erf(x / sqrt(2)))."""
    inner = e.op("Erf", e.op("Mul", x, e.const(1.0 / math.sqrt(2.0))))
    return e.op("Mul", e.op("Mul", x, e.const(0.5)), e.op("Add", inner, e.const(1.0)), out=out)


def _gelu(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    _gelu_erf(e, node.input[0], out=node.output[0])
    return True


def _bias_gelu(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    _gelu_erf(e, e.op("Add", node.input[0], node.input[1]), out=node.output[0])
    return True


def _fast_gelu(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """The tanh approximation: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))), x = X (+ bias)."""
    x = node.input[0]
    if _opt(node, 1):
        x = e.op("Add", x, node.input[1])
    cube = e.op("Mul", e.op("Mul", x, x), x)
    inner = e.op("Mul", e.op("Add", x, e.op("Mul", cube, e.const(0.044715))), e.const(math.sqrt(2.0 / math.pi)))
    half = e.op("Mul", x, e.const(0.5))
    e.op("Mul", half, e.op("Add", e.op("Tanh", inner), e.const(1.0)), out=node.output[0])
    return True


def _quick_gelu(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """x * sigmoid(alpha * x)."""
    x = node.input[0]
    e.op("Mul", x, e.op("Sigmoid", e.op("Mul", x, e.const(a.get("alpha", 1.702)))), out=node.output[0])
    return True


def _bias_add(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    e.op("Add", e.op("Add", node.input[0], node.input[1]), node.input[2], out=node.output[0])
    return True


def _bias_split_gelu(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """(X + bias) split in halves along the last axis: left * gelu(right)."""
    x = e.op("Add", node.input[0], node.input[1])
    left, right = e._name(), e._name()
    e.nodes.append(onnx.helper.make_node("Split", [x], [left, right], axis=-1, **_split_attrs(e)))
    e.op("Mul", left, _gelu_erf(e, right), out=node.output[0])
    return True


def _split_attrs(e: Emitter) -> dict:
    return {"num_outputs": 2} if e.opset() >= 18 else {}


def _skip_layer_norm(e: Emitter, node: onnx.NodeProto, a: dict, simplified: bool = False) -> bool:
    """s = input + skip (+ bias); output = normalize(s) over the last axis * gamma (+ beta). Optional outputs:
    mean, inv_std_var (onnxruntime computes them; shapes [..., 1]) and the sum s. Simplified: RMS, no mean/beta."""
    s = e.op("Add", node.input[0], node.input[1])
    bias = _opt(node, 3 if simplified else 4)
    if bias:
        s = e.op("Add", s, bias)
    outs = list(node.output) + [""] * 4
    eps = e.const(a.get("epsilon", 1e-12))
    if simplified:
        centered = s
        mean_out = None
    else:
        mean = _mean_last(e, s)
        centered = e.op("Sub", s, mean)
        mean_out = mean
    var = _mean_last(e, e.op("Mul", centered, centered))
    inv = e.op("Reciprocal", e.op("Sqrt", e.op("Add", var, eps)))
    y = e.op("Mul", e.op("Mul", centered, inv), node.input[2])
    beta = None if simplified else _opt(node, 3)
    if beta:
        y = e.op("Add", y, beta)
    e.op("Identity", y, out=outs[0])
    # Optional outputs: simplified has (output, mean (unused), inv_std_var, input_skip_bias_sum).
    if outs[1]:  # the simplified op's "mean" is not computed (onnxruntime leaves it unwritten): zeros here
        e.op("Identity", mean_out, out=outs[1]) if mean_out else e.op("Mul", inv, e.const(0.0), out=outs[1])
    if outs[2]:
        e.op("Identity", inv, out=outs[2])
    if outs[3]:
        e.op("Identity", s, out=outs[3])
    return True


def _mean_last(e: Emitter, x: str) -> str:
    """ReduceMean over the last axis, kept (axes became an input in opset 18)."""
    if e.opset() >= 18:
        return e.op("ReduceMean", x, e.const([-1], I64), keepdims=1)
    return e.op("ReduceMean", x, axes=[-1], keepdims=1)


def _skip_simplified(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    return _skip_layer_norm(e, node, a, simplified=True)


def _fused_matmul(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """alpha * op(A) @ op(B), op transposing the last two axes; the batch transposes are not written here."""
    if a.get("transBatchA", 0) or a.get("transBatchB", 0):
        return False
    ops = []
    for pos, flag in ((0, "transA"), (1, "transB")):
        x = node.input[pos]
        if a.get(flag, 0):
            rank = e.rank(x) or (e.initializer(x).ndim if e.initializer(x) is not None else None)
            if rank is None or rank < 2:
                return False
            perm = [*range(rank - 2), rank - 1, rank - 2]
            x = e.op("Transpose", x, perm=perm)
        ops.append(x)
    y = e.op("MatMul", *ops)
    alpha = a.get("alpha", 1.0)
    if alpha != 1.0:
        e.op("Mul", y, e.const(alpha), out=node.output[0])
    else:
        e.op("Identity", y, out=node.output[0])
    return True


def _dynamic_quantize_matmul(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """onnxruntime's kernel: A quantized to uint8 as DynamicQuantizeLinear does, an integer MatMul against B
    (int32, exact), scaled by a_scale * b_scale, plus bias."""
    aq, a_scale, a_zero = e._name(), e._name(), e._name()
    e.nodes.append(onnx.helper.make_node("DynamicQuantizeLinear", [node.input[0]], [aq, a_scale, a_zero]))
    b, b_scale, b_zero = node.input[1], node.input[2], _opt(node, 3)
    acc = e.op("MatMulInteger", aq, b, a_zero, *([b_zero] if b_zero else []))
    scale = e.op("Mul", a_scale, b_scale)
    y = e.op("Mul", e.op("Cast", acc, to=TensorProto.FLOAT), scale)
    bias = _opt(node, 4)
    e.op("Add" if bias else "Identity", y, *([bias] if bias else []), out=node.output[0])
    return True


def _quantized_lstm_shapes(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    """For shape inference only: an LSTM on the weights cast to float and laid out as ONNX's LSTM wants them
    ([D, I, 4H] -> [D, 4H, I]); inputs X, W, R, B, sequence_lens, initial_h, initial_c, P come first in both."""
    ins = list(node.input) + [""] * 8
    w, r = (e.op("Transpose", e.op("Cast", ins[k], to=e.elem), perm=[0, 2, 1]) for k in (1, 2))
    keep = {k: v for k, v in a.items() if k in ("hidden_size", "direction", "activations", "clip", "input_forget")}
    inputs = [ins[0], w, r, *ins[3:8]]
    while inputs and not inputs[-1]:
        inputs.pop()
    e.nodes.append(onnx.helper.make_node("LSTM", inputs, list(node.output), **keep))
    return True


RULES = [
    OpRule(
        ("DynamicQuantizeLSTM",),
        MS,
        "refuse",
        "not lowered (no exact form: onnxruntime quantizes each step's input); its output shapes as an LSTM's, so "
        "the nodes after it get shapes",
        shapes=_quantized_lstm_shapes,
        refuse=lambda node, a: (
            "opforge has no lowering for recurrent ops (LSTM, and onnxruntime's quantized LSTM, which quantizes each "
            "step's input at run time); keep the LSTM in float (quantize_dynamic(op_types_to_quantize=[...]) "
            "without LSTM) so TensorRT runs it"
        ),
    ),
    OpRule(("Gelu",), MS, "decompose", "0.5 x (1 + erf(x / sqrt 2))", rewrite=_gelu),
    OpRule(("BiasGelu",), MS, "decompose", "Gelu (erf) of X + bias", rewrite=_bias_gelu),
    OpRule(("FastGelu",), MS, "decompose", "Gelu's tanh approximation of X (+ bias)", rewrite=_fast_gelu),
    OpRule(("QuickGelu",), MS, "decompose", "x * sigmoid(alpha x)", rewrite=_quick_gelu),
    OpRule(("BiasAdd",), MS, "decompose", "X + bias + skip", rewrite=_bias_add),
    OpRule(("BiasSplitGelu",), MS, "decompose", "(X + bias) halves: left * gelu(right)", rewrite=_bias_split_gelu),
    OpRule(
        ("SkipLayerNormalization",),
        MS,
        "decompose",
        "LayerNormalization (last axis) of input + skip (+ bias); mean, inv_std_var and the sum as outputs",
        rewrite=_skip_layer_norm,
    ),
    OpRule(
        ("SkipSimplifiedLayerNormalization",),
        MS,
        "decompose",
        "RMS normalization (last axis) of input + skip (+ bias); inv_std_var and the sum as outputs",
        rewrite=_skip_simplified,
    ),
    OpRule(
        ("FusedMatMul",),
        MS,
        "decompose",
        "alpha * MatMul with transA/transB as Transposes; transBatchA/B not supported",
        rewrite=_fused_matmul,
    ),
    OpRule(
        ("DynamicQuantizeMatMul",),
        MS,
        "decompose",
        "DynamicQuantizeLinear of A, MatMulInteger (exact int32), scaled by both scales, plus bias",
        rewrite=_dynamic_quantize_matmul,
        weights=(1, 4),
    ),
]
