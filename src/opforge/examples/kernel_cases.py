"""The op cases the kernel plans and plugins are checked on: TPAT's published shapes and small ones.

Each case is one ONNX node with a symbolic batch `B`; `batches` are the batch sizes it is run at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from opforge.examples.onnx_build import single_node_model as m


@dataclass(frozen=True)
class KernelCase:
    name: str
    build: Callable[[], onnx.ModelProto]
    batches: tuple[int, ...]
    tpat: bool = False  # one of TPAT's published benchmark shapes

    @property
    def op_type(self) -> str:
        return self.build().graph.node[0].op_type


f32 = "float32"
i64 = "int64"
_R = np.random.default_rng(1234)  # fixed values for constant inputs (scales, LayerNorm weights)


def _compress_condition() -> np.ndarray:
    c = _R.random(16) < 0.5
    c[0] = True
    return c


CASES: list[KernelCase] = [
    KernelCase(
        "gathernd_tpat",
        lambda: m("GatherND", [("data", f32, ["B", 128, 128, 224]), ("idx", i64, ["B", 600, 3])]),
        (1, 7, 64),
        tpat=True,
    ),
    KernelCase(
        "gathernd_batchdims",
        lambda: m("GatherND", [("data", f32, ["B", 8, 16]), ("idx", i64, ["B", 5, 2])], attrs={"batch_dims": 1}),
        (1, 7, 64),
    ),
    KernelCase(
        "scatternd_tpat",
        lambda: m(
            "ScatterND",
            [("data", f32, ["B", 128, 128, 256]), ("idx", i64, ["B", 600, 3]), ("upd", f32, ["B", 600, 256])],
        ),
        (32, 1, 7),
        tpat=True,
    ),
    KernelCase(
        "scatternd_small",
        lambda: m("ScatterND", [("data", f32, ["B", 16, 8]), ("idx", i64, ["B", 10, 2]), ("upd", f32, ["B", 10, 8])]),
        (1, 7, 64),
    ),
    KernelCase(
        "onehot_tpat",
        lambda: m(
            "OneHot",
            [("idx", i64, ["B"])],
            consts={"depth": np.array(16384, np.int64), "values": np.array([-1.5, 2.5], np.float32)},
            order=["idx", "depth", "values"],
            attrs={"axis": -1},
        ),
        (16, 1, 7, 64),
        tpat=True,
    ),
    KernelCase(
        "resize_nearest_tpat",
        lambda: m(
            "Resize",
            [("x", f32, ["B", 32, 44, 50])],
            consts={"scales": np.array([1, 1, 4, 4], np.float32)},
            order=["x", "", "scales"],
            attrs={"mode": "nearest"},
        ),
        (32, 1, 7),
        tpat=True,
    ),
    KernelCase(
        "resize_linear_tpat",
        lambda: m(
            "Resize",
            [("x", f32, ["B", 32, 44, 50])],
            consts={"scales": np.array([1, 1, 4, 4], np.float32)},
            order=["x", "", "scales"],
            attrs={"mode": "linear"},
        ),
        (32, 1, 7),
        tpat=True,
    ),
    KernelCase(
        "resize_linear_small",
        lambda: m(
            "Resize",
            [("x", f32, ["B", 3, 5, 7])],
            consts={"scales": np.array([1, 1, 2, 3], np.float32)},
            order=["x", "", "scales"],
            attrs={"mode": "linear"},
        ),
        (1, 7, 64),
    ),
    KernelCase(
        "reducemax_tpat",
        lambda: m(
            "ReduceMax",
            [("x", f32, ["B", 82, 128])],
            consts={"axes": np.array([1], np.int64)},
            order=["x", "axes"],
            attrs={"keepdims": 0},
        ),
        (256, 1, 7, 64),
        tpat=True,
    ),
    KernelCase(
        "layernorm",
        lambda: m(
            "LayerNormalization",
            [("x", f32, ["B", 128, 768])],
            consts={
                "scale": _R.uniform(0.5, 1.5, 768).astype(np.float32),
                "bias": _R.uniform(-1, 1, 768).astype(np.float32),
            },
            order=["x", "scale", "bias"],
            attrs={"axis": -1, "epsilon": 1e-5},
        ),
        (1, 7, 64),
    ),
    KernelCase(
        "einsum_bmm",
        lambda: m(
            "Einsum",
            [("a", f32, ["B", 64, 32]), ("b", f32, ["B", 32, 48])],
            attrs={"equation": "bij,bjk->bik"},
        ),
        (1, 7, 64),
    ),
    KernelCase("erf", lambda: m("Erf", [("x", f32, ["B", 1024])]), (1, 7, 64)),
    KernelCase("gelu", lambda: m("Gelu", [("x", f32, ["B", 1024])], opset=20), (1, 7, 64)),
    KernelCase(
        "bitwise_and",
        lambda: m("BitwiseAnd", [("a", "int32", ["B", 4096]), ("b", "int32", ["B", 4096])]),
        (1, 7, 64),
    ),
    KernelCase(
        "cumsum",
        lambda: m("CumSum", [("x", f32, ["B", 1024])], consts={"axis": np.array(1, np.int64)}, order=["x", "axis"]),
        (1, 7, 64),
    ),
    KernelCase(
        "compress",
        lambda: m(
            "Compress",
            [("x", f32, ["B", 16])],
            consts={"cond": _compress_condition()},
            order=["x", "cond"],
            attrs={"axis": 1},
        ),
        (1, 7, 64),
    ),
    KernelCase("softmax", lambda: m("Softmax", [("x", f32, ["B", 1000])]), (1, 7, 64)),
    KernelCase(
        "where",
        lambda: m("Where", [("c", "bool", ["B", 64]), ("x", f32, ["B", 64]), ("y", f32, ["B", 64])]),
        (1, 7, 64),
    ),
    KernelCase(
        "transpose",
        lambda: m("Transpose", [("x", f32, ["B", 3, 16, 32])], attrs={"perm": [0, 2, 3, 1]}),
        (1, 7, 64),
    ),
    KernelCase(
        "instancenorm",
        lambda: m(
            "InstanceNormalization",
            [("x", f32, ["B", 8, 16, 16])],
            consts={
                "s": _R.uniform(0.5, 1.5, 8).astype(np.float32),
                "b": _R.uniform(-1, 1, 8).astype(np.float32),
            },
            order=["x", "s", "b"],
        ),
        (1, 7, 64),
    ),
    KernelCase(
        "gather",
        lambda: m("Gather", [("data", f32, ["B", 50, 16]), ("idx", i64, [7])], attrs={"axis": 1}),
        (1, 7, 64),
    ),
    KernelCase("argmax", lambda: m("ArgMax", [("x", f32, ["B", 1000])], attrs={"axis": 1, "keepdims": 0}), (1, 7, 64)),
    KernelCase(
        "pad",
        lambda: m(
            "Pad",
            [("x", f32, ["B", 3, 8, 8])],
            consts={"pads": np.array([0, 0, 1, 2, 0, 0, 3, 1], np.int64)},
            order=["x", "pads"],
            attrs={"mode": "reflect"},
        ),
        (1, 7, 64),
    ),
    KernelCase(
        "topk",
        lambda: m(
            "TopK",
            [("x", f32, ["B", 100])],
            consts={"k": np.array([5], np.int64)},
            order=["x", "k"],
            n_outputs=2,
        ),
        (1, 7, 64),
    ),
    KernelCase("nonzero", lambda: m("NonZero", [("x", f32, ["B", 16])]), (1, 7)),
]


def by_name(name: str) -> KernelCase:
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(name)
