"""Col2Im: TVM's ONNX frontend has no converter. With the image and block shapes constant it is a gather and a sum:
each output pixel adds the columns entries that land on it, at most M of them (M: the most blocks covering one
pixel); a table [pixels, M] of column positions, padded with the position of an extra zero column, is computed
here once. No atomics, and each pixel sums its entries in a fixed order."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto

from opforge.ops.base import Emitter, OpRule

I64 = TensorProto.INT64


def col2im_table(image: list[int], block: list[int], dilations, pads, strides) -> tuple[np.ndarray, int]:
    """[prod(image), M] positions into the flattened (kernel position, block position) columns, and L, the number
    of blocks; entries past a pixel's count hold prod(block) * L, the extra zero column."""
    n = len(image)
    padded = [image[i] + pads[i] + pads[i + n] for i in range(n)]
    blocks = [(padded[i] - (dilations[i] * (block[i] - 1) + 1)) // strides[i] + 1 for i in range(n)]
    n_blocks = int(np.prod(blocks))
    hits: list[list[int]] = [[] for _ in range(int(np.prod(image)))]
    for k, kpos in enumerate(itertools.product(*(range(b) for b in block))):
        for l_idx, bpos in enumerate(itertools.product(*(range(b) for b in blocks))):
            pix = [bpos[i] * strides[i] + kpos[i] * dilations[i] - pads[i] for i in range(n)]
            if all(0 <= pix[i] < image[i] for i in range(n)):
                hits[int(np.ravel_multi_index(pix, image))].append(k * n_blocks + l_idx)
    width = max((len(h) for h in hits), default=0) or 1
    zero = int(np.prod(block)) * n_blocks
    return np.array([h + [zero] * (width - len(h)) for h in hits], np.int64), n_blocks


def _col2im(e: Emitter, node: onnx.NodeProto, a: dict) -> bool:
    x, image_in, block_in = node.input[:3]
    image, block = e.initializer(image_in), e.initializer(block_in)
    if image is None or block is None:
        return False  # run-time image or block shape: left to TVM (which fails and says so)
    image, block = [int(v) for v in image], [int(v) for v in block]
    n = len(image)
    table, n_blocks = col2im_table(
        image, block, a.get("dilations", [1] * n), a.get("pads", [0] * 2 * n), a.get("strides", [1] * n)
    )
    k = int(np.prod(block))
    # [N, C*K, L] -> [N, C, K*L], then one zero column at the end (the table's padding points there).
    shape = e.op("Shape", x)
    n_dim = e.op("Slice", shape, e.const([0], I64), e.const([1], I64))
    grouped = e.op("Reshape", x, e.op("Concat", n_dim, e.const([-1, k * n_blocks], I64), axis=0))
    padded = e.op("Pad", grouped, e.const([0, 0, 0, 0, 0, 1], I64))
    gathered = e.op("Gather", padded, e.const(table, I64), axis=2)  # [N, C, pixels, M]
    summed = e.op("ReduceSum", gathered, e.const([3], I64), keepdims=0)
    out_shape = e.op("Concat", n_dim, e.const([-1, *image], I64), axis=0)
    e.op("Reshape", summed, out_shape, out=node.output[0])
    return True


RULES = [
    OpRule(
        ("Col2Im",),
        lowering="decompose",
        summary="constant image/block shapes: Gather of the columns by a precomputed table, summed per pixel",
        rewrite=_col2im,
    )
]
