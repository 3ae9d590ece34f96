"""The speed benchmark's cases: TPAT's published shapes, fp32 and fp16, each as a one-node ONNX model, the bytes the
op must move (for the roofline). The PyTorch contenders (eager, torch.compile) are the op registry's counterparts
(opforge.ops, each rule's `torch`); torch is imported only on the GPU host."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from opforge.core import dtypes
from opforge.examples.onnx_build import single_node_model as m

F32, F16, I64 = "float32", "float16", "int64"


@dataclass(frozen=True)
class BenchCase:
    name: str
    dtype: str  # the float dtype of the data
    build: Callable[[str], onnx.ModelProto]  # dtype -> model
    moved_bytes: int  # what the op must read and write at least

    def model(self) -> onnx.ModelProto:
        return self.build(self.dtype)

    def torch_fn(self, torch, _inputs=None, _dtype: str | None = None) -> Callable:
        """The op registry's PyTorch counterpart of the case's node, specialised to its constant inputs."""
        return torch_counterpart(torch, self.model())

    def reference_model(self) -> onnx.ModelProto:
        return self.build(F32)


def torch_counterpart(torch, model: onnx.ModelProto) -> Callable:
    """The registry's PyTorch counterpart of a one-node model's node: a callable of its run-time inputs."""
    from opforge.bench.wide import torch_node

    return torch_node(torch, model, model.graph.node[0])[0]


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    return int(np.prod(shape)) * dtypes.by_name(dtype).itemsize


# -- GatherND -------------------------------------------------------------------------------------------------------
def _gathernd(data_shape, idx_shape):
    def build(dt):
        return m("GatherND", [("data", dt, list(data_shape)), ("idx", I64, list(idx_shape))])

    k = idx_shape[-1]
    slice_elems = int(np.prod(data_shape[k:]))
    n = int(np.prod(idx_shape[:-1]))

    def moved(dt):
        return 2 * n * slice_elems * dtypes.by_name(dt).itemsize + _nbytes(idx_shape, I64)

    return build, moved


# -- ScatterND ------------------------------------------------------------------------------------------------------
def _scatternd(data_shape, idx_shape, reduction):
    upd_shape = (*idx_shape[:-1], *data_shape[idx_shape[-1] :])

    def build(dt):
        attrs = {"reduction": reduction} if reduction != "none" else {}
        return m(
            "ScatterND",
            [("data", dt, list(data_shape)), ("idx", I64, list(idx_shape)), ("upd", dt, list(upd_shape))],
            attrs=attrs,
        )

    def moved(dt):
        return 2 * _nbytes(data_shape, dt) + _nbytes(upd_shape, dt) + _nbytes(idx_shape, I64)

    return build, moved


# -- OneHot ---------------------------------------------------------------------------------------------------------
def _onehot(n, depth):
    def build(dt):
        return m(
            "OneHot",
            [("idx", I64, [n])],
            consts={"depth": np.array(depth, np.int64), "values": np.array([-1.5, 2.5], dtypes.numpy_dtype(dt))},
            order=["idx", "depth", "values"],
            attrs={"axis": -1},
        )

    def moved(dt):
        return n * depth * dtypes.by_name(dt).itemsize + n * 8

    return build, moved


# -- Resize (ONNX defaults: half_pixel; nearest rounds half down) ------------------------------------------------------
def _resize(in_shape, out_hw, mode):
    out_shape = (*in_shape[:2], *out_hw)

    def build(dt):
        return m(
            "Resize",
            [("x", dt, list(in_shape))],
            consts={"sizes": np.array(out_shape, np.int64)},
            order=["x", "", "", "sizes"],
            attrs={"mode": mode},
        )

    def moved(dt):
        return _nbytes(in_shape, dt) + _nbytes(out_shape, dt)

    return build, moved


# -- ReduceMax ------------------------------------------------------------------------------------------------------
def _reducemax(shape, axis):
    out_shape = tuple(d for k, d in enumerate(shape) if k != axis)

    def build(dt):
        return m(
            "ReduceMax",
            [("x", dt, list(shape))],
            consts={"axes": np.array([axis], np.int64)},
            order=["x", "axes"],
            attrs={"keepdims": 0},
        )

    def moved(dt):
        return _nbytes(shape, dt) + _nbytes(out_shape, dt)

    return build, moved


_DEFS = {
    "gathernd_1x128x128x224_idx1x600x3": _gathernd((1, 128, 128, 224), (1, 600, 3)),
    "gathernd_1x158x128x128_idx1x2": _gathernd((1, 158, 128, 128), (1, 2)),
    "scatternd_update_32x128x128x256_idx32x600x3": _scatternd((32, 128, 128, 256), (32, 600, 3), "none"),
    "scatternd_add_32x128x128x256_idx32x600x3": _scatternd((32, 128, 128, 256), (32, 600, 3), "add"),
    "onehot_16_depth16384": _onehot(16, 16384),
    "resize_nearest_32x32x44x50_to_176x200": _resize((32, 32, 44, 50), (176, 200), "nearest"),
    "resize_nearest_32x64x11x12_to_176x200": _resize((32, 64, 11, 12), (176, 200), "nearest"),
    "resize_linear_32x32x44x50_to_176x200": _resize((32, 32, 44, 50), (176, 200), "linear"),
    "resize_linear_32x64x11x12_to_176x200": _resize((32, 64, 11, 12), (176, 200), "linear"),
    "reducemax_256x82x128_axis1": _reducemax((256, 82, 128), 1),
}


def cases(dtypes_: tuple[str, ...] = (F32, F16)) -> list[BenchCase]:
    out = []
    for dt in dtypes_:
        for name, (build, moved) in _DEFS.items():
            out.append(BenchCase(f"{name}_{dt}", dt, build, moved(dt)))
    return out
