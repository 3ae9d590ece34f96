"""MatMulInteger of 8-bit operands as a GEMM of packed bytes with CUDA's four-way byte dot product (__dp4a).

TVM's converter widens both operands to int32 and subtracts the zero points, so DLight's Matmul rule makes an int32
GEMM, bound by the integer multiply-add rate (one product per instruction: 72.8 µs for 512x1024 @ 1024x1024 on the
H100, 0.44x torch.compile). Here each operand is shifted to int8 (a8 = a - 128 for uint8, a itself for int8), four
consecutive bytes along K are packed into one int32 (A's rows are contiguous along K; B is repacked once per call,
K/4 x N words), and the GEMM sums __dp4a(A4[m, q], B4[q, n]): four products per instruction, a quarter of the
loads. The zero points enter afterwards, exactly, as ONNX's int32 accumulation does (a = a8 + ca, ca = 128 - a_zero
for uint8, -a_zero for int8; likewise B):

    out = a8 @ b8 + rowsum(a8) * cb + ca * colsum(b8) + K * ca * cb

On the CPU (TVM's llvm target, the semantic check) the packed product is the plain sum of the four products.
"""

from __future__ import annotations

from tvm import te, tirx

from opforge.lower.kernels.data_dependent import on_gpu

LANES = 4  # bytes per packed word


def _byte(word, lane: int):
    """Signed byte `lane` of an int32 word."""
    return tirx.Cast("int32", tirx.Cast("int8", tirx.shift_right(word, tirx.const(8 * lane, "int32"))))


def pack(x8: te.Tensor, axis: int, name: str) -> te.Tensor:
    """int8 `x8` with four consecutive bytes along `axis` (K: -1 for A's rows, -2 for B's columns) packed into one
    int32 word, the first byte lowest: that axis becomes a quarter as long."""
    rank = len(x8.shape)
    axis %= rank
    shape = [*x8.shape]
    shape[axis] = shape[axis] // LANES

    def f(*idx):
        word = tirx.const(0, "int32")
        for lane in range(LANES):
            at = [*idx]
            at[axis] = idx[axis] * LANES + lane
            byte = tirx.Cast("int32", x8[tuple(at)]) & tirx.const(0xFF, "int32")
            word = word | tirx.shift_left(byte, tirx.const(8 * lane, "int32"))
        return word

    return te.compute(shape, f, name=name)


def packed_matmul(a4: te.Tensor, b4: te.Tensor) -> te.Tensor:
    """(M, Q) @ (Q, N) of packed words -> (M, N) int32, each word pair contributing its four byte products."""
    rows, words = a4.shape
    cols = b4.shape[-1]
    q = te.reduce_axis((0, words), name="q")
    gpu = on_gpu()

    def dot(x, y):
        if gpu:
            return tirx.call_pure_extern("int32", "__dp4a", x, y, tirx.const(0, "int32"))
        out = _byte(x, 0) * _byte(y, 0)
        for lane in range(1, LANES):
            out = out + _byte(x, lane) * _byte(y, lane)
        return out

    return te.compute((rows, cols), lambda m, n: te.sum(dot(a4[m, q], b4[q, n]), axis=q), name="matmul_dp4a")


def supported(a_shape, b_shape) -> bool:
    """2-D operands with a static K that four divides."""
    if len(a_shape) != 2 or len(b_shape) != 2:
        return False
    k = a_shape[-1]
    return isinstance(k, tirx.IntImm) and int(k) % LANES == 0 and int(k) > 0
