"""ReduceLogSumExp over trailing axes as one kernel: softmax's shape (a max, a sum of exponentials, a tail).

TVM's converter emits a max, a subtract/exp/sum and a log/add/squeeze as three relax ops; FuseOps cannot put two
reductions in one kernel, so a 37x1000 LogSumExp took three launches (0.47x torch.compile on the H100) and a half
one five (a float32 copy of the input among them). As one TE function of three blocks over the same rows, DLight's
GeneralReduction makes it one kernel with one block per row, as it does for softmax; the float32 Cast of a half input
(lower/onnx_rewrites.py widen_accumulations) fuses into its loads.

The max is only a shift: log(sum(exp(x))) = log(sum(exp(x - m))) + m for any finite m. A row whose max is not
finite shifts by 0, so a row of -inf gives -inf (log 0) and a row holding +inf gives +inf, ONNX's values, where
x - m would be NaN.
"""

from __future__ import annotations

from tvm import te, tirx


def supported(shape: list, axes: list[int]) -> bool:
    """Static dims, every reduced axis trailing and non-empty (an empty reduction keeps TVM's lowering)."""
    if any(not isinstance(d, (int, tirx.IntImm)) for d in shape) or not axes:
        return False
    rank = len(shape)
    trailing = sorted(a % rank for a in axes) == list(range(rank - len(axes), rank))
    return trailing and all(int(shape[a % rank]) > 0 for a in axes)


def logsumexp_te(x: te.Tensor, reduced: int, keepdims: bool) -> te.Tensor:
    """log(sum(exp(x))) over the last `reduced` axes, computed in float32 for half and float32 inputs."""
    shape = list(x.shape)
    lead, trail = shape[: len(shape) - reduced], shape[len(shape) - reduced :]
    vt = str(x.dtype)
    acc = "float64" if vt == "float64" else "float32"

    def axes(name):
        return [te.reduce_axis((0, d), name=f"{name}{k}") for k, d in enumerate(trail)]

    ra = axes("m")
    row_max = te.compute(lead, lambda *i: te.max(tirx.Cast(acc, x[(*i, *ra)]), axis=ra), name="lse_max")

    def shift(i):
        m = row_max[i]
        return tirx.if_then_else(tirx.isfinite(m), m, tirx.const(0.0, acc))

    rs = axes("s")
    total = te.compute(
        lead, lambda *i: te.sum(te.exp(tirx.Cast(acc, x[(*i, *rs)]) - shift(i)), axis=rs), name="lse_sum"
    )
    out_shape = lead + [1] * reduced if keepdims else lead

    def out(*j):
        i = tuple(j[: len(lead)])
        return tirx.Cast(vt, te.log(total[i]) + shift(i))

    return te.compute(out_shape, out, name="logsumexp")
