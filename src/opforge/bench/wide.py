"""The wide benchmark's workloads: ops that real models need plugins for, at realistic shapes chosen before any
tuning, plus chains of adjacent nodes that opforge fuses into one plugin.

Each workload is an ONNX model (one node, or a chain whose nodes are all selected and fused), the bytes it must move
at least (every graph input read once, every graph output written once: the roofline), and its PyTorch contender,
built from the op registry's counterparts node by node (`torch_graph`), so a chain's contender is the same chain
for torch.compile to fuse. torch is imported only on the GPU host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from opforge.core import dtypes
from opforge.examples.onnx_build import graph_model
from opforge.examples.onnx_build import single_node_model as m
from opforge.ops import rule_for
from opforge.ops.base import attrs, text, torch_device

F32, F16, I64, U8 = "float32", "float16", "int64", "uint8"


@dataclass(frozen=True)
class Workload:
    name: str
    dtype: str
    build: Callable[[str], onnx.ModelProto]  # dtype -> model
    note: str = ""

    def model(self) -> onnx.ModelProto:
        return self.build(self.dtype)

    def reference_model(self) -> onnx.ModelProto:
        """The float32 twin a half-precision workload is checked against (CPU references lack fp16 kernels)."""
        return self.build(F32)


def moved_bytes(model: onnx.ModelProto) -> int:
    """Graph inputs read once and graph outputs written once (shapes must be static)."""
    total = 0
    for vi in [*model.graph.input, *model.graph.output]:
        t = vi.type.tensor_type
        shape = [d.dim_value for d in t.shape.dim]
        total += int(np.prod(shape)) * dtypes.from_onnx(t.elem_type).itemsize
    return total


def workload_inputs(
    model: onnx.ModelProto, sub_model: onnx.ModelProto, rng: np.random.Generator
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Inputs of the workload's plugin subgraph (`sub_model`, in its input order), drawn from each op's valid
    domain, except that a weight (a constant the plugin takes as a run-time input, as TensorRT passes weights:
    MatMulInteger's B and its zero point) gets the workload's value, so the reference, opforge and the PyTorch
    contenders (which hold the constants themselves) compute the same thing; and the same arrays by the workload's
    tensor names."""
    from opforge.extract.groups import fusion_groups
    from opforge.extract.subgraph import extract_groups
    from opforge.verify.inputs import make_inputs

    shapes = [tuple(int(x.dim_value) for x in vi.type.tensor_type.shape.dim) for vi in sub_model.graph.input]
    drawn = make_inputs(sub_model, shapes, rng)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    if sub_model is model:  # no plugin subgraph (the workload did not build): the workload's own inputs
        names = [vi.name for vi in model.graph.input]
    else:
        (cut,) = extract_groups(model, fusion_groups(model, list(model.graph.node)))
        names = cut.input_names  # the workload's tensor behind each subgraph input, in order
    inputs = [inits[n].astype(a.dtype) if n in inits else a for n, a in zip(names, drawn)]
    return inputs, dict(zip(names, inputs))


def sampled_bytes(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> int:
    """Bytes the model's RoiAlign nodes must read at their sampling points (0 for other ops), from the boxes in
    `values` (input name -> array): for each box, the distinct map pixels under the 4 corners of its sampling
    points, times the channels. A kernel reads each at least once per box however it lays the map out; boxes
    spread over the map share few of them, so they cross L2, where the roofline counts each input byte once."""
    total = 0
    for node in model.graph.node:
        if node.op_type != "RoiAlign":
            continue
        a = attrs(node)
        ratio = int(a.get("sampling_ratio", 0))
        x = next(vi for vi in model.graph.input if vi.name == node.input[0]).type.tensor_type
        if ratio <= 0 or node.input[1] not in values:  # adaptive grids, or boxes unknown
            continue
        _n, channels, height, width = (d.dim_value for d in x.shape.dim)
        offset = 0.5 if text(a.get("coordinate_transformation_mode"), "half_pixel") == "half_pixel" else 0.0
        scale = float(a.get("spatial_scale", 1.0))
        oh, ow = int(a.get("output_height", 1)), int(a.get("output_width", 1))
        for x1, y1, x2, y2 in values[node.input[1]].astype(np.float64) * scale - offset:
            rows = _corner_lines(y1, y2 - y1, oh, ratio, height, offset == 0.0)
            cols = _corner_lines(x1, x2 - x1, ow, ratio, width, offset == 0.0)
            total += rows * cols * channels * dtypes.from_onnx(x.elem_type).itemsize
    return total


def _corner_lines(start: float, size: float, bins: int, ratio: int, extent: int, clamp: bool) -> int:
    """Distinct map lines (rows or columns) the bilinear corners of a box's sampling points touch on one axis."""
    size = max(size, 1.0) if clamp else size
    step = size / bins
    points = np.array([start + p * step + (i + 0.5) * step / ratio for p in range(bins) for i in range(ratio)])
    points = points[(points >= -1.0) & (points <= extent)]
    low = np.clip(points, 0, extent - 1).astype(np.int64)
    return len(set(low.tolist()) | set(np.minimum(low + 1, extent - 1).tolist()))


def torch_node(torch, model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[Callable, list[str]]:
    """The op registry's PyTorch counterpart of one node: (a callable of the node's run-time inputs, their names).
    The counterpart itself receives every input of the node in order (ONNX's signature), the constant ones as
    tensors put on the GPU once here, so nothing is copied from the host while the callable is timed."""
    rule = rule_for(node)
    if rule.torch is None:
        raise NotImplementedError(f"{node.op_type}: no PyTorch counterpart in the op registry")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consts = {k: inits[name] for k, name in enumerate(node.input) if name in inits}
    device = torch_device(torch)
    on_device = {name: torch.from_numpy(np.array(inits[name])).to(device) for name in node.input if name in inits}
    fn = rule.torch(torch, node, consts)
    runtime = [name for name in node.input if name and name not in inits]

    def call(*args):
        given = dict(zip(runtime, args))
        return fn(*[on_device[n] if n in on_device else given.get(n) for n in node.input])

    return call, runtime


def torch_graph(torch, model: onnx.ModelProto) -> Callable:
    """The model as a PyTorch function of its graph inputs: each node through the op registry's counterpart
    (torch_node)."""
    steps = []
    for node in model.graph.node:
        fn, runtime = torch_node(torch, model, node)
        steps.append((fn, runtime, list(node.output)))
    inits = {t.name for t in model.graph.initializer}
    inputs = [vi.name for vi in model.graph.input if vi.name not in inits]
    outputs = [vi.name for vi in model.graph.output]

    def f(*args):
        env = dict(zip(inputs, args))
        for fn, ins, outs in steps:
            got = fn(*[env[i] for i in ins])
            got = got if isinstance(got, tuple) else (got,)
            env.update(zip(outs, got))
        res = tuple(env[o] for o in outputs)
        return res if len(res) > 1 else res[0]

    return f


def _chain(nodes: list[onnx.NodeProto], inputs, consts: dict[str, np.ndarray], opset: int = 21) -> onnx.ModelProto:
    return graph_model(nodes, inputs, consts, opset, "chain")


def _output_like_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """Declare the output with the input's type and shape (for ops ONNX's shape inference leaves untyped)."""
    out = model.graph.output[0]
    if not out.type.HasField("tensor_type"):
        out.type.CopyFrom(model.graph.input[0].type)
    return model


def _np(dt: str):
    return dtypes.numpy_dtype(dt)


def _axes(axes) -> dict[str, np.ndarray]:
    return {"axes": np.array(axes, np.int64)}


def _reduce(op: str, shape, axes, keepdims=0):
    def build(dt):
        return m(op, [("x", dt, list(shape))], consts=_axes(axes), order=["x", "axes"], attrs={"keepdims": keepdims})

    return build


def _unary(op: str, shape, **attrs):
    def build(dt):
        return m(op, [("x", dt, list(shape))], attrs=attrs)

    return build


def _cumsum(shape, axis, exclusive, reverse):
    def build(dt):
        return m(
            "CumSum",
            [("x", dt, list(shape))],
            consts={"axis": np.array(axis, np.int64)},
            order=["x", "axis"],
            attrs={"exclusive": exclusive, "reverse": reverse},
        )

    return build


def _layernorm(shape):
    def build(dt):
        c = shape[-1]
        consts = {"scale": np.linspace(0.5, 1.5, c).astype(_np(dt)), "bias": np.linspace(-0.2, 0.2, c).astype(_np(dt))}
        return m("LayerNormalization", [("x", dt, list(shape))], consts=consts, order=["x", "scale", "bias"])

    return build


def _groupnorm(shape, groups):
    def build(dt):
        c = shape[1]
        consts = {"scale": np.linspace(0.5, 1.5, c).astype(_np(dt)), "bias": np.linspace(-0.2, 0.2, c).astype(_np(dt))}
        model = m(
            "GroupNormalization",
            [("x", dt, list(shape))],
            consts=consts,
            order=["x", "scale", "bias"],
            attrs={"num_groups": groups},
            opset=21,
        )
        return _output_like_input(model)

    return build


def _rmsnorm(shape):
    def build(dt):
        consts = {"scale": np.linspace(0.5, 1.5, shape[-1]).astype(_np(dt))}
        return m("RMSNormalization", [("x", dt, list(shape))], consts=consts, order=["x", "scale"], opset=23)

    return build


def _instancenorm(shape):
    def build(dt):
        c = shape[1]
        consts = {"scale": np.linspace(0.5, 1.5, c).astype(_np(dt)), "bias": np.linspace(-0.2, 0.2, c).astype(_np(dt))}
        return m("InstanceNormalization", [("x", dt, list(shape))], consts=consts, order=["x", "scale", "bias"])

    return build


def _topk(shape, k):
    def build(dt):
        return m("TopK", [("x", dt, list(shape))], consts={"k": np.array([k], np.int64)}, order=["x", "k"], n_outputs=2)

    return build


def _onehot(n, depth):
    def build(dt):
        return m(
            "OneHot",
            [("idx", I64, [n])],
            consts={"depth": np.array(depth, np.int64), "values": np.array([0.0, 1.0], _np(dt))},
            order=["idx", "depth", "values"],
        )

    return build


def _gather_elements(shape, k):
    def build(dt):
        return m("GatherElements", [("x", dt, list(shape)), ("i", I64, [shape[0], k])], attrs={"axis": 1})

    return build


def _scatter_elements(shape, k, reduction):
    def build(dt):
        idx = [shape[0], k]
        return m(
            "ScatterElements",
            [("x", dt, list(shape)), ("i", I64, idx), ("u", dt, idx)],
            attrs={"axis": 1, "reduction": reduction},
        )

    return build


def _einsum(eq, a, b):
    def build(dt):
        return m("Einsum", [("a", dt, list(a)), ("b", dt, list(b))], attrs={"equation": eq}, opset=18)

    return build


def roialign_workload(fmap, rois: int, out: int, scale: float, ratio: int = 2):
    """RoiAlign over a map of shape `fmap` (N, C, H, W), `rois` boxes, `out` x `out` outputs, half-pixel
    coordinates at `spatial_scale` `scale`, `ratio` sampling points per bin and axis (0: adaptive): a builder of
    the model for a dtype (also scripts/roialign_dispatch.py's cases)."""

    def build(dt):
        return m(
            "RoiAlign",
            [("x", dt, list(fmap)), ("rois", dt, [rois, 4]), ("idx", I64, [rois])],
            attrs={
                "output_height": out,
                "output_width": out,
                "sampling_ratio": ratio,
                "spatial_scale": scale,
                "coordinate_transformation_mode": "half_pixel",
            },
            opset=16,
        )

    return build


def _center_crop_pad(shape, hw):
    def build(dt):
        return m(
            "CenterCropPad",
            [("x", dt, list(shape))],
            consts={"shape": np.array(hw, np.int64)},
            order=["x", "shape"],
            attrs={"axes": [2, 3]},
        )

    return build


def _grid_sample(shape, out_hw):
    def build(dt):
        grid = [shape[0], *out_hw, 2]
        return m("GridSample", [("x", dt, list(shape)), ("grid", dt, grid)], opset=20)

    return build


def _compress(shape, keep_every):
    def build(dt):
        mask = (np.arange(shape[1]) % keep_every == 0).astype(bool)
        return m("Compress", [("x", dt, list(shape))], consts={"c": mask}, order=["x", "c"], attrs={"axis": 1})

    return build


def _dql(shape):
    def build(dt):
        return m("DynamicQuantizeLinear", [("x", F32, list(shape))], n_outputs=3)

    return build


def _matmul_integer(mk, kn):
    def build(dt):
        zp = {"az": np.array(128, np.uint8), "bz": np.array(127, np.uint8)}
        return m("MatMulInteger", [("a", U8, list(mk)), ("b", U8, list(kn))], consts=zp, order=["a", "b", "az", "bz"])

    return build


def _mod(shape, fmod):
    def build(dt):
        return m("Mod", [("x", dt, list(shape)), ("y", dt, list(shape))], attrs={"fmod": fmod})

    return build


def _bitshift(shape):
    def build(dt):
        return m("BitShift", [("x", U8, list(shape)), ("s", U8, list(shape))], attrs={"direction": "LEFT"})

    return build


# -- chains of adjacent nodes, fused into one plugin -------------------------------------------------------------------
def _ln_gelu_l2(shape):
    def build(dt):
        c = shape[-1]
        consts = {
            "scale": np.linspace(0.5, 1.5, c).astype(_np(dt)),
            "bias": np.linspace(-0.2, 0.2, c).astype(_np(dt)),
            "axes": np.array([-1], np.int64),
        }
        nodes = [
            helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["ln"], name="ln"),
            helper.make_node("Gelu", ["ln"], ["g"], name="gelu", approximate="tanh"),
            helper.make_node("ReduceL2", ["g", "axes"], ["y"], name="l2", keepdims=0),
        ]
        return _chain(nodes, [("x", dt, list(shape))], consts, opset=20)

    return build


def _groupnorm_silu(shape, groups):
    def build(dt):
        c = shape[1]
        consts = {"scale": np.linspace(0.5, 1.5, c).astype(_np(dt)), "bias": np.linspace(-0.2, 0.2, c).astype(_np(dt))}
        nodes = [
            helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["gn"], name="gn", num_groups=groups),
            helper.make_node("Sigmoid", ["gn"], ["s"], name="sig"),
            helper.make_node("Mul", ["gn", "s"], ["y"], name="silu"),
        ]
        return _output_like_input(_chain(nodes, [("x", dt, list(shape))], consts, opset=21))

    return build


def _softmax_topk(shape, k):
    def build(dt):
        nodes = [
            helper.make_node("Softmax", ["x"], ["p"], name="softmax", axis=-1),
            helper.make_node("TopK", ["p", "k"], ["v", "i"], name="topk"),
        ]
        return _chain(nodes, [("x", dt, list(shape))], {"k": np.array([k], np.int64)}, opset=18)

    return build


def _dql_matmul_integer(mk, kn):
    def build(dt):
        nodes = [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dql"),
            helper.make_node("MatMulInteger", ["q", "w", "z", "wz"], ["y"], name="mmi"),
        ]
        consts = {
            "w": np.random.default_rng(0).integers(0, 256, size=kn).astype(np.uint8),
            "wz": np.array(128, np.uint8),
        }
        return _chain(nodes, [("x", F32, list(mk))], consts, opset=18)

    return build


_DEFS: list[tuple[str, Callable, tuple[str, ...], str]] = [
    ("reducelogsumexp_37x1000_classes", _reduce("ReduceLogSumExp", (37, 1000), [1]), (F32,), ""),
    ("reducelogsumexp_64x32768", _reduce("ReduceLogSumExp", (64, 32768), [1]), (F32, F16), ""),
    ("reducel2_16x197x384_last", _reduce("ReduceL2", (16, 197, 384), [2]), (F32,), ""),
    ("reducesumsquare_64x256x56x56_channels", _reduce("ReduceSumSquare", (64, 256, 56, 56), [1]), (F32,), ""),
    ("reducemean_128x4096x64_middle", _reduce("ReduceMean", (128, 4096, 64), [1]), (F32, F16), ""),
    ("cumsum_64x4096_exclusive_reverse", _cumsum((64, 4096), 1, 1, 1), (F32,), ""),
    ("cumsum_16x65536_forward", _cumsum((16, 65536), 1, 0, 0), (F32,), ""),
    ("layernorm_8x512x768", _layernorm((8, 512, 768)), (F32, F16), ""),
    ("groupnorm_16x320x64x64_g32", _groupnorm((16, 320, 64, 64), 32), (F32,), ""),
    ("rmsnorm_8x512x4096", _rmsnorm((8, 512, 4096)), (F32, F16), ""),
    ("instancenorm_16x64x112x112", _instancenorm((16, 64, 112, 112)), (F32,), ""),
    ("softmax_64x32768", _unary("Softmax", (64, 32768), axis=-1), (F32, F16), ""),
    ("logsoftmax_256x1000", _unary("LogSoftmax", (256, 1000), axis=-1), (F32,), ""),
    ("topk_64x32768_k100", _topk((64, 32768), 100), (F32,), ""),
    ("onehot_1024_depth1000", _onehot(1024, 1000), (F32,), ""),
    ("gatherelements_4096x4096_k1024", _gather_elements((4096, 4096), 1024), (F32,), ""),
    ("scatterelements_add_4096x4096_k1024", _scatter_elements((4096, 4096), 1024, "add"), (F32,), ""),
    ("einsum_bhqd_bhkd_16x12x197x64", _einsum("bhqd,bhkd->bhqk", (16, 12, 197, 64), (16, 12, 197, 64)), (F32,), ""),
    ("roialign_fpn_256x200x272_1000boxes_s0.25", roialign_workload((1, 256, 200, 272), 1000, 7, 0.25), (F32,), ""),
    # Detectron2's 1333x800 input: P2 is 200x334, a float32 plane larger than an H100 block's shared memory.
    ("roialign_fpn_256x200x334_1000boxes_s0.25", roialign_workload((1, 256, 200, 334), 1000, 7, 0.25), (F32,), ""),
    ("centercroppad_32x3x256x256_to_224", _center_crop_pad((32, 3, 256, 256), [224, 224]), (F32,), ""),
    ("gridsample_16x64x56x56", _grid_sample((16, 64, 56, 56), (56, 56)), (F32,), ""),
    ("compress_64x4096_const_mask", _compress((64, 4096), 3), (F32,), ""),
    ("dynamicquantizelinear_1024x4096", _dql((1024, 4096)), (F32,), ""),
    ("matmulinteger_512x1024x1024", _matmul_integer((512, 1024), (1024, 1024)), (U8,), ""),
    ("mod_fmod_4096x4096", _mod((4096, 4096), 1), (F32,), ""),
    ("bitshift_left_4096x4096", _bitshift((4096, 4096)), (U8,), ""),
    ("chain_layernorm_gelu_reducel2_16x197x384", _ln_gelu_l2((16, 197, 384)), (F32,), "3 nodes, one plugin"),
    ("chain_groupnorm_silu_8x320x64x64", _groupnorm_silu((8, 320, 64, 64), 32), (F32, F16), "3 nodes, one plugin"),
    ("chain_softmax_topk_64x32000_k50", _softmax_topk((64, 32000), 50), (F32,), "2 nodes, one plugin"),
    ("chain_dql_matmulinteger_256x1024x1024", _dql_matmul_integer((256, 1024), (1024, 1024)), (F32,), "2 nodes"),
]


def workloads(only: str = "") -> list[Workload]:
    """Every workload at each of its dtypes (name suffixed with the dtype)."""
    return [
        Workload(f"{name}_{dt}", dt, build, note)
        for name, build, dts, note in _DEFS
        for dt in dts
        if only in f"{name}_{dt}"
    ]
