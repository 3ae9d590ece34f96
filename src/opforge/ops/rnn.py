"""RNN, GRU, LSTM: TVM's ONNX frontend has no converter. With X's shape static the recurrence is unrolled over
the sequence in ONNX ops, per direction: the input projections X·Wᵀ + Wb of every gate for all steps at once, then
per step the recurrent MatMul with R, the gate equations of the ONNX spec (clip on activation inputs as Min/Max,
GRU's linear_before_reset, LSTM's peepholes P), and the states carried to the next step. sequence_lens (run time
or constant): entries past a batch entry's length keep its state and write zeros to Y; the reverse direction reads
each entry's own first len[b] steps backwards (ReverseSequence of X, then of Y). layout 1 is transposed in and out.
Refused: activations other than Tanh/Sigmoid/Relu/Softsign/Softplus or with activation_alpha/beta, LSTM
input_forget and LSTM clip (where its h activation's input is clipped is not settled)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, InputDomain, OpRule, text
from opforge.ops.reverse_sequence import lengths_domain, reverse_sequence

I64 = TensorProto.INT64
MAX_STEPS = 512  # the unrolled graph grows with the sequence length
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
ACTS = {"Tanh", "Sigmoid", "Relu", "Softsign", "Softplus"}


def _dirs(a: dict) -> list[str]:
    d = text(a.get("direction"), "forward")
    return ["forward", "reverse"] if d == "bidirectional" else [d]


def _refuse(node: onnx.NodeProto, a: dict) -> str | None:
    if text(a.get("direction"), "forward") not in ("forward", "reverse", "bidirectional"):
        return f"{node.op_type} direction {text(a.get('direction'))!r} is not an ONNX direction"
    acts = [text(x) for x in a.get("activations", [])]
    bad = [x for x in acts if x not in ACTS]
    if bad:
        return f"{node.op_type} activations {bad}: opforge implements {sorted(ACTS)} only"
    if a.get("activation_alpha") or a.get("activation_beta"):
        return f"{node.op_type} activation_alpha/activation_beta: not implemented by opforge"
    if node.op_type == "LSTM" and a.get("input_forget", 0):
        return "LSTM input_forget=1: not implemented by opforge"
    if node.op_type == "LSTM" and a.get("clip") is not None:
        return "LSTM clip: not implemented by opforge"
    return None


def _input(node: onnx.NodeProto, pos: int) -> str:
    return node.input[pos] if len(node.input) > pos else ""


def _recurrent(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    op = node.op_type
    if _refuse(node, a):
        return False
    x, w, r = node.input[:3]
    bias, lens, h0 = _input(node, 3), _input(node, 4), _input(node, 5)
    c0, peep = (_input(node, 6), _input(node, 7)) if op == "LSTM" else ("", "")
    shape = e.static_shape(x)
    if shape is None or len(shape) != 3:
        return False
    layout = a.get("layout", 0)
    if layout:
        x = e.op("Transpose", x, perm=[1, 0, 2])
        shape = [shape[1], shape[0], shape[2]]
    steps, batch = shape[0], shape[1]
    if not 0 < steps <= MAX_STEPS:
        return False
    hidden = a.get("hidden_size")
    if hidden is None:
        r_shape = e.static_shape(r)
        if r_shape is None:
            return False
        hidden = r_shape[-1]
    n_gates = GATES[op]
    dirs = _dirs(a)
    acts = [text(v) for v in a.get("activations", [])] or DEFAULT_ACTS[op] * len(dirs)
    n_acts = len(DEFAULT_ACTS[op])
    if len(acts) != n_acts * len(dirs):
        return False
    clip = a.get("clip")
    lens_value = e.initializer(lens) if lens else None
    if lens_value is not None and bool(np.all(lens_value == steps)):
        lens = ""  # every entry runs the whole sequence: no masking
    if lens and e.opset() < 11:
        return False  # the masking and reversal by sequence_lens use GatherElements (opset 11)
    ctx = _Ctx(e, op, hidden, batch, clip, lens, a.get("linear_before_reset", 0))

    ys, hs, cs = [], [], []
    for d, direction in enumerate(dirs):
        ctx.acts = acts[d * n_acts : (d + 1) * n_acts]
        dc = e.const(d, I64)
        wd, rd = e.op("Gather", w, dc, axis=0), e.op("Gather", r, dc, axis=0)
        bd = e.op("Gather", bias, dc, axis=0) if bias else None
        xs = x
        if direction == "reverse" and lens:
            xs = reverse_sequence(e, x, lens, shape, 0, 1)
        h = _state(e, h0, d, layout, batch, hidden)
        c = _state(e, c0, d, layout, batch, hidden) if op == "LSTM" else None
        pd = e.op("Gather", peep, dc, axis=0) if peep else None
        proj = [ctx.projection(xs, wd, bd, g) for g in range(n_gates)]
        rec = [ctx.weight_t(rd, g) for g in range(n_gates)]
        rbias = [ctx.bias(bd, n_gates + g) if bd else None for g in range(n_gates)]
        order = list(range(steps))
        if direction == "reverse" and not lens:
            order.reverse()
        outs: dict[int, str] = {}
        for k, t in enumerate(order):
            xt = [e.op("Gather", p, e.const(t, I64), axis=0) for p in proj]
            if op == "RNN":
                h_new, c_new = ctx.rnn_step(xt, h, rec, rbias), None
            elif op == "GRU":
                h_new, c_new = ctx.gru_step(xt, h, rec, rbias), None
            else:
                h_new, c_new = ctx.lstm_step(xt, h, c, rec, rbias, pd)
            if lens:
                mask = ctx.mask(k)
                outs[t] = e.op("Where", mask, h_new, e.const(np.zeros((batch, hidden))))
                h = e.op("Where", mask, h_new, h)
                c = e.op("Where", mask, c_new, c) if c_new else c
            else:
                outs[t], h, c = h_new, h_new, c_new
        y = e.op("Concat", *(e.unsqueeze(outs[t], [0]) for t in range(steps)), axis=0)  # [T, B, H]
        if direction == "reverse" and lens:
            y = reverse_sequence(e, y, lens, [steps, batch, hidden], 0, 1)
        ys.append(e.unsqueeze(y, [1]))
        hs.append(e.unsqueeze(h, [0]))
        if c is not None:
            cs.append(e.unsqueeze(c, [0]))

    results = [ys, hs, cs]
    perms = [[2, 0, 1, 3], [1, 0, 2], [1, 0, 2]]
    for k, out in enumerate(node.output):
        if not out:
            continue
        parts = results[k]
        joined = e.op("Concat", *parts, axis=1 if k == 0 else 0) if len(parts) > 1 else parts[0]
        if layout:
            e.op("Transpose", joined, perm=perms[k], out=out)
        else:
            e.op("Identity", joined, out=out)
    return True


def _state(e: Emitter, given: str, d: int, layout: int, batch: int, hidden: int) -> str:
    """Direction d's initial state [B, H]: from initial_h/initial_c ([dirs, B, H], or [B, dirs, H] in layout 1)
    or zeros."""
    if not given:
        return e.const(np.zeros((batch, hidden)))
    return e.op("Gather", given, e.const(d, I64), axis=1 if layout else 0)


class _Ctx:
    """The emitter and the attributes one recurrent node's steps share."""

    def __init__(self, e: Emitter, op: str, hidden: int, batch: int, clip, lens: str, linear_before_reset: int):
        self.e, self.op, self.hidden, self.batch, self.clip = e, op, hidden, batch, clip
        self.lens, self.lbr = lens, linear_before_reset
        self.acts: list[str] = []
        self._lens64 = None

    def rows(self, g: int) -> str:
        return self.e.const(np.arange(g * self.hidden, (g + 1) * self.hidden), I64)

    def weight_t(self, wd: str, g: int) -> str:
        """Gate g's block of a [G*H, K] weight, transposed to [K, H]."""
        return self.e.op("Transpose", self.e.op("Gather", wd, self.rows(g), axis=0), perm=[1, 0])

    def bias(self, bd: str, g: int) -> str:
        """Block g of the [2*G*H] bias (blocks 0..G-1: Wb, G..2G-1: Rb)."""
        return self.e.op("Gather", bd, self.rows(g), axis=0)

    def projection(self, x: str, wd: str, bd: str | None, g: int) -> str:
        """X·W_gᵀ + Wb_g for all steps: [T, B, H]."""
        p = self.e.op("MatMul", x, self.weight_t(wd, g))
        return self.e.op("Add", p, self.bias(bd, g)) if bd else p

    def recur(self, h: str, rec: list[str], rbias: list[str | None], g: int) -> str:
        """H·R_gᵀ + Rb_g."""
        p = self.e.op("MatMul", h, rec[g])
        return self.e.op("Add", p, rbias[g]) if rbias[g] else p

    def act(self, k: int, x: str) -> str:
        if self.clip is not None:
            c = float(self.clip)
            x = self.e.op("Max", self.e.op("Min", x, self.e.const(c)), self.e.const(-c))
        return self.e.op(self.acts[k], x)

    def mask(self, t: int) -> str:
        """[B, 1]: step t is inside the batch entry's sequence."""
        e = self.e
        if self._lens64 is None:
            self._lens64 = e.unsqueeze(e.op("Cast", self.lens, to=I64), [1])
        return e.op("Less", e.const([[t]], I64), self._lens64)

    def rnn_step(self, xt: list[str], h: str, rec: list[str], rbias: list[str | None]) -> str:
        return self.act(0, self.e.op("Add", xt[0], self.recur(h, rec, rbias, 0)))

    def gru_step(self, xt: list[str], h: str, rec: list[str], rbias: list[str | None]) -> str:
        e = self.e
        z = self.act(0, e.op("Add", xt[0], self.recur(h, rec, rbias, 0)))
        r = self.act(0, e.op("Add", xt[1], self.recur(h, rec, rbias, 1)))
        if self.lbr:
            hh = e.op("Add", xt[2], e.op("Mul", r, self.recur(h, rec, rbias, 2)))
        else:
            hh = e.op("Add", xt[2], self.recur(e.op("Mul", r, h), rec, rbias, 2))
        hh = self.act(1, hh)
        one_minus_z = e.op("Sub", e.const(1.0), z)
        return e.op("Add", e.op("Mul", one_minus_z, hh), e.op("Mul", z, h))

    def lstm_step(
        self, xt: list[str], h: str, c: str, rec: list[str], rbias: list[str | None], pd: str | None
    ) -> tuple[str, str]:
        e = self.e
        pre = [e.op("Add", xt[g], self.recur(h, rec, rbias, g)) for g in range(4)]  # i, o, f, c
        if pd:
            pi, po, pf = (e.op("Gather", pd, self.rows(g), axis=0) for g in range(3))
            pre[0] = e.op("Add", pre[0], e.op("Mul", pi, c))
            pre[2] = e.op("Add", pre[2], e.op("Mul", pf, c))
        i, f, cc = self.act(0, pre[0]), self.act(0, pre[2]), self.act(1, pre[3])
        c_new = e.op("Add", e.op("Mul", f, c), e.op("Mul", i, cc))
        if pd:
            pre[1] = e.op("Add", pre[1], e.op("Mul", po, c_new))
        o = self.act(0, pre[1])
        return e.op("Mul", o, self.act(2, c_new)), c_new


def _inputs(d: InputDomain) -> None:
    """sequence_lens drawn in [1, seq_length]."""
    lengths_domain(d, 4, d.shape(0)[1 if d.a.get("layout", 0) else 0])


RULES = [
    OpRule(
        tuple(GATES),
        lowering="decompose",
        summary="static X shape: the recurrence unrolled over the sequence in ONNX ops (directions, layout, "
        "sequence_lens, initial states, clip, linear_before_reset, peepholes)",
        rewrite=_recurrent,
        refuse=_refuse,
        inputs=_inputs,
    )
]
