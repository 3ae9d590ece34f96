"""GroupNormalization as one kernel of layer normalization's shape: rows of one group each.

TVM's `relax.nn.group_norm` legalization (TOPI's) does not schedule under DLight ("the reduction block vars are not
used to index the output buffers"), so GroupNormalization was lowered from its ONNX function body: a float32 copy of
the input, a kernel for E[x], one for E[x^2] and one for the normalization, the input read four times and written
twice (0.50x torch.compile on 16x320x64x64, 32 groups, on the H100).

A group of an NCHW tensor is a contiguous range: (N, C, *spatial) seen as (N, G, M) with M = C/G * prod(spatial)
is a reshape, a view. Over that view the op is a layer normalization of each (n, g) row with a per-channel scale
and bias (channel g * C/G + m // prod(spatial)): the mean of a row in float32 (ONNX's stash_type), the mean of its
centred squares, then the normalized row. DLight's GeneralReduction makes that one kernel, one block per row (the
input read three times, the second and third mostly from L2; the output written once), as it does for layer
normalization. InstanceNormalization is the case of one channel per group.
"""

from __future__ import annotations

from tvm import te, tirx


def group_norm_te(
    x: te.Tensor,
    scale: te.Tensor,
    bias: te.Tensor,
    epsilon: float,
    channels_per_group: int,
    spatial: int,
    per_channel: bool,
) -> te.Tensor:
    """(N, G, M) normalized per (n, g) row; scale and bias per channel (opset 21) or per group (opset 18)."""
    rows_n, groups, m_len = x.shape
    vt = str(x.dtype)
    acc = "float64" if vt == "float64" else "float32"

    def xv(n, g, m):
        return tirx.Cast(acc, x[n, g, m])

    inv_len = tirx.const(1.0, acc) / tirx.Cast(acc, m_len)
    k1 = te.reduce_axis((0, m_len), name="k1")
    total = te.compute((rows_n, groups), lambda n, g: te.sum(xv(n, g, k1), axis=k1), name="group_sum")
    # The variance from the centred values (a second pass over the row, mostly from L2), not E[x^2] - E[x]^2:
    # that cancels in float32 when the mean is large against the spread (mean 1000, std 1: 6% off the variance).
    k2 = te.reduce_axis((0, m_len), name="k2")

    def centred(n, g, m):
        return xv(n, g, m) - total[n, g] * inv_len

    squares = te.compute(
        (rows_n, groups),
        lambda n, g: te.sum(centred(n, g, k2) * centred(n, g, k2), axis=k2),
        name="group_centred_squares",
    )

    def out(n, g, m):
        c = g * channels_per_group + m // spatial if per_channel else g
        y = centred(n, g, m) * tirx.rsqrt(squares[n, g] * inv_len + tirx.const(epsilon, acc))
        return tirx.Cast(vt, y * tirx.Cast(acc, scale[c]) + tirx.Cast(acc, bias[c]))

    return te.compute(x.shape, out, name="group_norm")


def supported(shape: list, groups: int, scale_len) -> bool:
    """A static (N, C, ...) shape whose channels the groups divide, scale/bias of a static length."""
    if len(shape) < 2 or any(not isinstance(d, (int, tirx.IntImm)) for d in shape):
        return False
    channels = int(shape[1])
    return groups > 0 and channels % groups == 0 and scale_len is not None
