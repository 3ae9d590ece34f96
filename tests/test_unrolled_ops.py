"""Ops TVM's ONNX frontend lacks, lowered through the registry's decompositions (Scan and RNN/GRU/LSTM unrolled,
ReverseSequence, DFT/STFT as constant matrices, CumProd, Det, TensorScatter), run by TVM on the CPU (llvm) against
ONNX's reference evaluator on seeded random non-zero inputs."""

from __future__ import annotations

import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from opforge.core.tolerances import for_dtype
from opforge.extract.subgraph import NodeSubgraph

pytest.importorskip("tvm")

F32 = TensorProto.FLOAT
TOL = for_dtype("float32")


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Uniform in +-[0.1, 1]: random, non-zero."""
    return (rng.uniform(0.1, 1.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


def _model(node: onnx.NodeProto, inputs: dict[str, np.ndarray], consts: dict[str, np.ndarray], opset: int, ref=None):
    """A one-node model: `inputs` as graph inputs, `consts` as initializers, outputs typed from the reference's
    outputs (or from `ref`, the expected outputs, where the reference evaluator lacks the case)."""
    g = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
            for k, v in inputs.items()
        ],
        [helper.make_tensor_value_info(o, F32, None) for o in node.output if o],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    ref = ref if ref is not None else ReferenceEvaluator(m).run(None, inputs)
    del m.graph.output[:]
    m.graph.output.extend(
        helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(r.dtype), list(r.shape))
        for o, r in zip([o for o in node.output if o], ref)
    )
    return m, ref


def _check(node, inputs, consts=None, opset=22, ref=None) -> list[np.ndarray]:
    """Lower and run the node on the CPU; assert it matches the reference (or `ref`); its outputs."""
    from opforge.lower.cpu_run import run_on_cpu

    m, expected = _model(node, inputs, consts or {}, opset, ref)
    sub = NodeSubgraph("case", node.op_type, m, list(inputs), {}, [o.name for o in m.graph.output])
    outs = run_on_cpu(sub, list(inputs.values()))
    for got, want in zip(outs, expected):
        tol = for_dtype("float32") if want.dtype.kind == "f" else None
        if tol is None:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, atol=tol.atol, rtol=tol.rtol)
    return outs


def _scan_node(**attributes) -> onnx.NodeProto:
    body = helper.make_graph(
        [
            helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
            helper.make_node("Mul", ["p_in", "x_t"], ["p_out"]),
            helper.make_node("Sub", ["s_out", "p_out"], ["y_t"]),
        ],
        "body",
        [helper.make_tensor_value_info(n, F32, [3]) for n in ("s_in", "p_in", "x_t")],
        [helper.make_tensor_value_info(n, F32, [3]) for n in ("s_out", "p_out", "y_t")],
    )
    return helper.make_node("Scan", ["s0", "p0", "x"], ["s", "p", "y"], body=body, num_scan_inputs=1, **attributes)


def test_scan_unrolled():
    """Two states and a scan output, against the reference."""
    rng = np.random.default_rng(1)
    _check(_scan_node(), {"s0": _rand(rng, 3), "p0": _rand(rng, 3), "x": _rand(rng, 5, 3)}, opset=16)


def test_scan_directions_and_axes():
    """A reversed scan input on axis 1 and a reversed scan output on axis 1 (the reference implements neither):
    against the loop written in numpy."""
    rng = np.random.default_rng(2)
    ins = {"s0": _rand(rng, 3), "p0": _rand(rng, 3), "x": _rand(rng, 3, 5)}
    s, p, ys = ins["s0"], ins["p0"], []
    for t in reversed(range(5)):
        s, p = s + ins["x"][:, t], p * ins["x"][:, t]
        ys.append(s - p)
    want = [s, p, np.stack(ys[::-1], axis=1)]
    node = _scan_node(scan_input_axes=[1], scan_input_directions=[1], scan_output_axes=[1], scan_output_directions=[1])
    _check(node, ins, opset=16, ref=want)


def _recurrent_inputs(op: str, rng, t: int, b: int, i: int, h: int, dirs: int, layout: int, peep: bool) -> dict:
    g = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    x = _rand(rng, b, t, i) if layout else _rand(rng, t, b, i)
    state = (lambda: _rand(rng, b, dirs, h)) if layout else (lambda: _rand(rng, dirs, b, h))
    ins = {"X": x, "W": _rand(rng, dirs, g * h, i), "R": _rand(rng, dirs, g * h, h), "B": _rand(rng, dirs, 2 * g * h)}
    ins["initial_h"] = state()
    if op == "LSTM":
        ins["initial_c"] = state()
        if peep:
            ins["P"] = _rand(rng, dirs, 3 * h)
    return ins


def _recurrent_node(op: str, names: list[str], h: int, direction: str, layout: int, **extra) -> onnx.NodeProto:
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    inputs = [n if n in names else "" for n in order[: max(order.index(n) for n in names) + 1]]
    outputs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    return helper.make_node(op, inputs, outputs, hidden_size=h, direction=direction, layout=layout, **extra)


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_unrolled(op, direction, layout):
    rng = np.random.default_rng(zlib.crc32(f"{op}{direction}{layout}".encode()))
    dirs = 2 if direction == "bidirectional" else 1
    ins = _recurrent_inputs(op, rng, 4, 2, 3, 5, dirs, layout, peep=True)
    extra = {"linear_before_reset": 1} if op == "GRU" and layout else {}
    _check(_recurrent_node(op, list(ins), 5, direction, layout, **extra), ins)


def test_recurrent_clip_and_activations():
    rng = np.random.default_rng(3)
    ins = _recurrent_inputs("GRU", rng, 3, 2, 3, 4, 1, 0, peep=False)
    ins["X"] *= 4
    node = _recurrent_node("GRU", list(ins), 4, "forward", 0, clip=0.5, activations=["Sigmoid", "Relu"])
    from opforge.lower.cpu_run import run_on_cpu

    m, _ = _model(node, ins, {}, 22)
    got = run_on_cpu(NodeSubgraph("c", "GRU", m, list(ins), {}, ["Y", "Y_h"]), list(ins.values()))
    # numpy: the GRU equations with clipped activation inputs
    w, r, bias, hprev = ins["W"][0], ins["R"][0], ins["B"][0], ins["initial_h"][0]
    wb, rb = np.split(bias, 2)
    hs = []
    for x in ins["X"]:
        gx, gh = x @ w.T + wb, hprev @ r.T + rb
        z = 1 / (1 + np.exp(-np.clip(gx[:, :4] + gh[:, :4], -0.5, 0.5)))
        rr = 1 / (1 + np.exp(-np.clip(gx[:, 4:8] + gh[:, 4:8], -0.5, 0.5)))
        hh = np.maximum(np.clip(gx[:, 8:] + (rr * hprev) @ r[8:].T + rb[8:], -0.5, 0.5), 0)
        hprev = (1 - z) * hh + z * hprev
        hs.append(hprev)
    np.testing.assert_allclose(got[0][:, 0], np.stack(hs), atol=TOL.atol, rtol=TOL.rtol)


def test_recurrent_refuses_unimplemented_activation():
    from opforge.ops import rule_for
    from opforge.ops.base import attrs

    node = helper.make_node("RNN", ["X", "W", "R"], ["Y"], hidden_size=2, activations=["HardSigmoid"])
    assert "HardSigmoid" in rule_for(node).refuse(node, attrs(node))


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("op", ["RNN", "LSTM"])
def test_recurrent_sequence_lens(op, direction):
    """Entries shorter than the sequence: each batch entry equals the reference run on its own prefix, and Y is
    zero past its length."""
    from opforge.lower.cpu_run import run_on_cpu

    rng = np.random.default_rng(7)
    t, b, h = 4, 3, 3
    ins = _recurrent_inputs(op, rng, t, b, 2, h, 1, 0, peep=False)
    lens = np.array([4, 2, 1], np.int32)
    full = {**ins, "sequence_lens": lens}
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c"]
    full = {k: full[k] for k in order if k in full}
    node = _recurrent_node(op, list(full), h, direction, 0)
    m, _ = _model(node, full, {}, 22)  # the reference ignores sequence_lens: only its output types are used
    outs = run_on_cpu(NodeSubgraph("c", op, m, list(full), {}, list(node.output)), list(full.values()))
    for k in range(b):
        one = {n: v[:, k : k + 1] if n.startswith("initial") else v for n, v in ins.items()}
        one["X"] = ins["X"][: lens[k], k : k + 1]
        ref_node = _recurrent_node(op, list(one), h, direction, 0)
        _, ref = _model(ref_node, one, {}, 22)
        np.testing.assert_allclose(outs[0][: lens[k], :, k : k + 1], ref[0], atol=TOL.atol, rtol=TOL.rtol)
        assert not outs[0][lens[k] :, :, k].any()
        np.testing.assert_allclose(outs[1][:, k : k + 1], ref[1], atol=TOL.atol, rtol=TOL.rtol)


@pytest.mark.parametrize("time_axis", [0, 1])
def test_reverse_sequence(time_axis):
    rng = np.random.default_rng(2)
    x = _rand(rng, 4, 5, 3) if time_axis == 0 else _rand(rng, 5, 4, 3)
    node = helper.make_node("ReverseSequence", ["x", "lens"], ["y"], time_axis=time_axis, batch_axis=1 - time_axis)
    _check(node, {"x": x, "lens": np.array([4, 1, 3, 2, 4], np.int64)}, opset=11)


@pytest.mark.parametrize(
    "shape,axis,inverse,onesided,length",
    [
        ((2, 8, 3, 1), 1, 0, 0, None),
        ((2, 3, 7, 2), 2, 0, 1, None),
        ((2, 7, 3, 2), 1, 1, 0, None),
        ((1, 5, 3, 2), 1, 1, 1, None),
        ((2, 6, 3, 1), 1, 0, 0, 9),
        ((2, 6, 3, 2), -2, 0, 0, 4),
    ],
)
def test_dft_matrices(shape, axis, inverse, onesided, length):
    rng = np.random.default_rng(4)
    inputs = ["x", "n" if length else "", "axis"]
    node = helper.make_node("DFT", inputs, ["y"], inverse=inverse, onesided=onesided)
    consts = {"axis": np.array(axis, np.int64)}
    if length:
        consts["n"] = np.array(length, np.int64)
    _check(node, {"x": _rand(rng, *shape)}, consts, opset=20)


@pytest.mark.parametrize("window", [False, True])
def test_stft(window):
    rng = np.random.default_rng(5)
    node = helper.make_node("STFT", ["x", "step", "w" if window else "", "" if window else "n"], ["y"])
    consts = {"step": np.array(3, np.int64)}
    ins = {"x": _rand(rng, 2, 20, 1)}
    if window:
        ins["w"] = _rand(rng, 8)
    else:
        consts["n"] = np.array(8, np.int64)
    _check(node, ins, consts, opset=17)


@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumprod(exclusive, reverse):
    rng = np.random.default_rng(6)
    node = helper.make_node("CumProd", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
    _check(node, {"x": _rand(rng, 3, 5, 2) + 1}, {"axis": np.array(1, np.int64)}, opset=26)
    ints = rng.integers(-3, 4, (4, 3)).astype(np.int32)
    _check(node, {"x": ints}, {"axis": np.array(-2, np.int64)}, opset=26)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_det(n):
    rng = np.random.default_rng(n)
    _check(helper.make_node("Det", ["x"], ["y"]), {"x": _rand(rng, 2, 3, n, n)})


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(mode):
    rng = np.random.default_rng(8)
    node = helper.make_node("TensorScatter", ["past", "upd", "idx"], ["y"], mode=mode, axis=2)
    idx = np.array([0, 3, 1], np.int64) if mode == "linear" else np.array([5, 3, 6], np.int64)
    _check(node, {"past": _rand(rng, 3, 2, 7, 4), "upd": _rand(rng, 3, 2, 3, 4), "idx": idx}, opset=24)


@pytest.mark.parametrize("group,offset_group,stride,dilation", [(1, 1, 1, 1), (2, 2, 2, 1), (1, 2, 1, 2)])
def test_deform_conv(group, offset_group, stride, dilation):
    rng = np.random.default_rng(9)
    n, c, h, w, oc, k = 2, 4, 6, 7, 4, 3
    oh = (h + 2 - dilation * (k - 1) - 1) // stride + 1
    ow = (w + 2 - dilation * (k - 1) - 1) // stride + 1
    ins = {
        "x": _rand(rng, n, c, h, w),
        "w": _rand(rng, oc, c // group, k, k),
        "offset": _rand(rng, n, offset_group * 2 * k * k, oh, ow) * 2,
        "b": _rand(rng, oc),
        "mask": _rand(rng, n, offset_group * k * k, oh, ow),
    }
    node = helper.make_node(
        "DeformConv",
        list(ins),
        ["y"],
        group=group,
        offset_group=offset_group,
        strides=[stride, stride],
        dilations=[dilation, dilation],
        pads=[1, 1, 1, 1],
        kernel_shape=[k, k],
    )
    _check(node, ins)


def test_scan8_batched():
    """Scan-8: batch axis 0, scan axis 1, one input reversed, sequence_lens absent."""
    rng = np.random.default_rng(10)
    node = _scan_node(directions=[1])
    node.input.insert(0, "")
    ins = {"s0": _rand(rng, 2, 3), "p0": _rand(rng, 2, 3), "x": _rand(rng, 2, 4, 3)}
    s, p, ys = ins["s0"], ins["p0"], []
    for t in reversed(range(4)):
        s, p = s + ins["x"][:, t], p * ins["x"][:, t]
        ys.append(s - p)
    _check(node, ins, opset=8, ref=[s, p, np.stack(ys, axis=1)])


def test_linear_attention_through_its_body():
    """LinearAttention (gated delta rule, with a past state): its ONNX function body, whose Scan is unrolled."""
    rng = np.random.default_rng(11)
    b, t, heads, dk = 2, 3, 2, 4
    ins = {
        "q": _rand(rng, b, t, heads * dk),
        "k": _rand(rng, b, t, heads * dk),
        "v": _rand(rng, b, t, heads * dk),
        "past": _rand(rng, b, heads, dk, dk),
        "decay": _rand(rng, b, t, heads * dk),
        "beta": np.abs(_rand(rng, b, t, heads)),
    }
    node = helper.make_node(
        "LinearAttention", list(ins), ["y", "state"], q_num_heads=heads, kv_num_heads=heads, update_rule="gated_delta"
    )
    _check(node, ins, opset=27)


def test_flex_attention_through_its_body():
    """FlexAttention (ai.onnx.preview) with a score_mod subgraph and grouped K/V heads: its function body."""
    from opforge.lower.cpu_run import run_on_cpu

    rng = np.random.default_rng(12)
    bias = numpy_helper.from_array(np.array(0.25, np.float32), "bias")
    score_mod = helper.make_graph(
        [helper.make_node("Add", ["s", "bias"], ["s_out"])],
        "score_mod",
        [helper.make_tensor_value_info("s", F32, None)],
        [helper.make_tensor_value_info("s_out", F32, None)],
        [bias],
    )
    node = helper.make_node("FlexAttention", ["Q", "K", "V"], ["Y"], domain="ai.onnx.preview", score_mod=score_mod)
    ins = {"Q": _rand(rng, 1, 4, 3, 8), "K": _rand(rng, 1, 2, 5, 8), "V": _rand(rng, 1, 2, 5, 8)}
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(k, F32, list(v.shape)) for k, v in ins.items()],
        [helper.make_tensor_value_info("Y", F32, [1, 4, 3, 8])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 26), helper.make_opsetid("ai.onnx.preview", 1)])
    want = ReferenceEvaluator(m).run(None, ins)[0]
    got = run_on_cpu(NodeSubgraph("f", "FlexAttention", m, list(ins), {}, ["Y"]), list(ins.values()))[0]
    np.testing.assert_allclose(got, want, atol=TOL.atol, rtol=TOL.rtol)
