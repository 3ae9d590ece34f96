"""DFT (opset 17 and 20): TVM's ONNX frontend has no converter. With the input shape, axis and dft_length known at
build time it is a matrix product: the signal axis moved last, real and imaginary parts (the last dimension, 1 or 2)
multiplied by constant cos/sin matrices computed here in float64 for the transform length n (the input truncated
or zero-padded to n, onesided keeping bins 0..n/2, inverse scaled by 1/n; inverse onesided is the real inverse of a
Hermitian spectrum: bins 1..(n-1)/2 counted twice, the imaginary parts of bins 0 and n/2 ignored, as numpy's
irfft does). Exact up to float rounding (an O(n) sum per output, against the FFT's O(log n))."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

I64 = TensorProto.INT64
MAX_LENGTH = 4096  # the constant matrices are n x n


def dft_matrices(
    length: int, n: int, inverse: bool, onesided: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(rr, ir, ri, ii, K): [length, K] matrices with out_re = re·rr + im·ir and out_im = re·ri + im·ii, and K,
    the output length, for an input of `length` entries along the signal axis."""
    if inverse and onesided:
        bins = n // 2 + 1
        k = np.arange(min(length, bins))[:, None]
        j = np.arange(n)[None, :]
        theta = 2 * np.pi * k * j / n
        weight = np.where((k == 0) | ((n % 2 == 0) & (k == n // 2)), 1.0, 2.0) / n
        rr = np.zeros((length, n))
        ir = np.zeros((length, n))
        rr[: k.shape[0]] = weight * np.cos(theta)
        ir[: k.shape[0]] = -weight * np.sin(theta)
        return rr, ir, np.zeros_like(rr), np.zeros_like(ir), n
    out_len = n // 2 + 1 if onesided else n
    j = np.arange(min(length, n))[:, None]
    k = np.arange(out_len)[None, :]
    theta = 2 * np.pi * j * k / n
    sign = 1.0 if inverse else -1.0
    scale = 1.0 / n if inverse else 1.0
    cos = np.zeros((length, out_len))
    sin = np.zeros((length, out_len))
    cos[: j.shape[0]] = scale * np.cos(theta)
    sin[: j.shape[0]] = scale * sign * np.sin(theta)
    # (re + i·im)(cos + i·sin) = re·cos - im·sin + i(re·sin + im·cos)
    return cos, -sin, sin, cos, out_len


def _dft(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    x = node.input[0]
    shape = e.static_shape(x)
    if shape is None or len(shape) < 3 or shape[-1] not in (1, 2):
        return False
    rank = len(shape)
    length_in = node.input[1] if len(node.input) > 1 else ""
    if e.opset() >= 20:
        axis_in = node.input[2] if len(node.input) > 2 else ""
        axis_value = e.initializer(axis_in) if axis_in else np.array(-2)
        if axis_value is None:
            return False
        axis = int(np.asarray(axis_value).reshape(-1)[0])
    else:
        axis = a.get("axis", 1)
    axis %= rank
    if axis == rank - 1:
        return False
    inverse, onesided = bool(a.get("inverse", 0)), bool(a.get("onesided", 0))
    length = shape[axis]
    if length_in:
        value = e.initializer(length_in)
        if value is None:
            return False
        n = int(np.asarray(value).reshape(-1)[0])
    else:
        n = 2 * (length - 1) if inverse and onesided else length
    if not 0 < n <= MAX_LENGTH:
        return False
    rr, ir, ri, ii, _ = dft_matrices(length, n, inverse, onesided)
    last = e.const(0, I64)
    re = e.op("Gather", x, last, axis=-1)  # rank - 1, signal at `axis`
    im = e.op("Gather", x, e.const(1, I64), axis=-1) if shape[-1] == 2 else None
    perm = [d for d in range(rank - 1) if d != axis] + [axis]
    back = list(np.argsort(perm))
    if perm != list(range(rank - 1)):
        re = e.op("Transpose", re, perm=perm)
        im = e.op("Transpose", im, perm=perm) if im else None

    def part(m_re: np.ndarray, m_im: np.ndarray) -> str:
        out = e.op("MatMul", re, e.const(m_re))
        if im:
            out = e.op("Add", out, e.op("MatMul", im, e.const(m_im)))
        if back != list(range(rank - 1)):
            out = e.op("Transpose", out, perm=[int(p) for p in back])
        return e.unsqueeze(out, [rank - 1])

    if inverse and onesided:
        e.op("Identity", part(rr, ir), out=node.output[0])
    else:
        e.op("Concat", part(rr, ir), part(ri, ii), axis=-1, out=node.output[0])
    return True


def _stft(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    x, step_in = node.input[:2]
    window = node.input[2] if len(node.input) > 2 else ""
    length_in = node.input[3] if len(node.input) > 3 else ""
    shape = e.static_shape(x)
    step = e.initializer(step_in)
    if shape is None or len(shape) != 3 or shape[-1] not in (1, 2) or step is None:
        return False
    step = int(np.asarray(step).reshape(-1)[0])
    _batch, signal, channels = shape
    w_shape = e.static_shape(window) if window else None
    if window and (w_shape is None or len(w_shape) != 1):
        return False
    if length_in:
        value = e.initializer(length_in)
        if value is None:
            return False
        n = int(np.asarray(value).reshape(-1)[0])
    elif window:
        n = w_shape[0]
    else:
        n = signal
    if not (0 < n <= MAX_LENGTH and step > 0 and n <= signal) or (window and w_shape[0] != n):
        return False
    frames = 1 + (signal - n) // step
    onesided = bool(a.get("onesided", 1))
    # frame f reads signal positions f*step .. f*step+n-1 (all inside the signal: n <= signal)
    table = np.arange(frames)[:, None] * step + np.arange(n)[None, :]
    framed = e.op("Gather", x, e.const(table, I64), axis=1)  # [B, F, n, C]
    if window:
        framed = e.op("Mul", framed, e.unsqueeze(window, [0, 1, 3]))
    rr, ir, ri, ii, _ = dft_matrices(n, n, False, onesided)
    re = e.op("Gather", framed, e.const(0, I64), axis=-1)  # [B, F, n]
    im = e.op("Gather", framed, e.const(1, I64), axis=-1) if channels == 2 else None

    def part(m_re: np.ndarray, m_im: np.ndarray) -> str:
        out = e.op("MatMul", re, e.const(m_re))
        if im:
            out = e.op("Add", out, e.op("MatMul", im, e.const(m_im)))
        return e.unsqueeze(out, [3])

    e.op("Concat", part(rr, ir), part(ri, ii), axis=-1, out=node.output[0])
    return True


RULES = [
    OpRule(
        ("DFT",),
        lowering="decompose",
        summary="static shape, axis and dft_length: MatMul with constant cos/sin matrices (onesided, inverse, "
        "real or complex input)",
        rewrite=_dft,
    ),
    OpRule(
        ("STFT",),
        lowering="decompose",
        summary="static signal shape, frame_step and frame_length: frames gathered by a constant table, windowed, "
        "then DFT's constant cos/sin MatMul",
        rewrite=_stft,
    ),
]
