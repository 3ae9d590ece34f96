"""The op registry's one small interface: an OpRule says what opforge knows about an ONNX op type.

A rule is plain data plus optional hooks; none of them imports TVM or torch at module level:
- how the op is lowered (`lowering`, `summary`): TVM's frontend as is, an ONNX rewrite or decomposition before TVM
  (`rewrite`), the op's ONNX function body expanded first (`expand_body`), opforge's own TIR kernel (`kernels`:
  a Relax op -> "module:function" override applied during legalization), or a refusal with its reason (`refuse`);
- its input domain (`inputs`, `value_range`): how to draw valid random inputs;
- its PyTorch counterpart for benchmarks (`torch`).
Ops without a rule get TVM's defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Lowering = Literal["tvm", "rewrite", "decompose", "function-body", "kernel", "refuse"]

FLOATS = (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16)


def attrs(node: onnx.NodeProto) -> dict:
    """The node's attributes as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def elem_types(m: onnx.ModelProto) -> dict[str, int]:
    """The ONNX element type of every tensor the graph declares (inputs, value_info, outputs, initializers)."""
    seen = [*m.graph.input, *m.graph.value_info, *m.graph.output]
    types = {vi.name: vi.type.tensor_type.elem_type for vi in seen}
    types.update({t.name: t.data_type for t in m.graph.initializer})
    return types


def text(value, default: str = "") -> str:
    """A STRING attribute's value as str (onnx gives bytes)."""
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


class Emitter:
    """Writes the nodes that replace one node: appends constants to the graph and collects new nodes, naming each
    new tensor after the node being replaced. `types` and `constants` describe the graph before any rewrite."""

    def __init__(self, m: onnx.ModelProto, node: onnx.NodeProto, types: dict[str, int], constants: set[str]):
        self.m, self.node, self.types, self.constants = m, node, types, constants
        self.prefix, self.nodes, self.k = f"{node.output[0]}__opf", [], 0

    @property
    def elem(self) -> int:
        """The float type the op computes in: its first float input's (float32 if none)."""
        return next((self.types[i] for i in self.node.input if self.types.get(i) in FLOATS), TensorProto.FLOAT)

    def _name(self) -> str:
        self.k += 1
        return f"{self.prefix}{self.k}"

    def const(self, value, elem: int | None = None) -> str:
        """A new initializer holding `value` (of the op's float type unless `elem` is given); its name."""
        name = self._name()
        dtype = helper.tensor_dtype_to_np_dtype(elem or self.elem)
        self.m.graph.initializer.append(numpy_helper.from_array(np.array(value, dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attributes) -> str:
        """A new node; its (single) output's name."""
        out = out or self._name()
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attributes))
        return out

    def to_float(self, x: str) -> str:
        return self.op("Cast", x, to=self.elem)

    def unsqueeze(self, x: str, axes: list[int], out: str | None = None) -> str:
        """Unsqueeze in the form the model's opset takes (axes an attribute before opset 13)."""
        if self.opset() >= 13:
            return self.op("Unsqueeze", x, self.const(axes, TensorProto.INT64), out=out)
        return self.op("Unsqueeze", x, out=out, axes=axes)

    def opset(self) -> int:
        """The model's default-domain opset: the form of the ops emitted depends on it."""
        return next((o.version for o in self.m.opset_import if o.domain in ("", "ai.onnx")), 1)

    def initializer(self, name: str) -> np.ndarray | None:
        """The value of a constant input, or None when it arrives at run time."""
        for t in self.m.graph.initializer:
            if t.name == name:
                return numpy_helper.to_array(t)
        return None

    def value_info(self, name: str) -> onnx.ValueInfoProto | None:
        return next((vi for vi in [*self.m.graph.input, *self.m.graph.value_info] if vi.name == name), None)

    def info(self, name: str) -> onnx.ValueInfoProto | None:
        """The tensor's ValueInfo: declared, else from ONNX shape inference (a tensor an earlier rewrite made, such
        as the float32 copy of a widened half input, loses its declaration when the graph is folded)."""
        return self.value_info(name) or self._inferred_info(name)

    def rank(self, name: str) -> int | None:
        """The tensor's rank: declared, else from ONNX shape inference (a tensor an earlier rewrite made, such as
        the float32 copy of a widened half input); None if unknown."""
        vi = self.info(name)
        if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            return None
        return len(vi.type.tensor_type.shape.dim)

    def _inferred_info(self, name: str) -> onnx.ValueInfoProto | None:
        if not hasattr(self, "_inferred"):
            try:
                g = onnx.shape_inference.infer_shapes(self.m, check_type=False, strict_mode=False, data_prop=True).graph
                self._inferred = {vi.name: vi for vi in [*g.input, *g.value_info, *g.output]}
            except Exception:
                self._inferred = {}
        return self._inferred.get(name)

    def static_shape(self, name: str) -> list[int] | None:
        """The tensor's shape when every dimension is a known number: declared (graph input, value_info), a
        constant's, else from ONNX shape inference over the graph with data propagation (a tensor an earlier
        rewrite made, such as the float32 copy of a widened half input, or a fused chain's intermediate, has no
        declaration: without inference, a rewrite that needs its shape would silently not apply); None where a
        dimension is unknown."""
        vi = self.value_info(name)
        if vi is None:
            for t in self.m.graph.initializer:
                if t.name == name:
                    return list(t.dims)
            vi = self._inferred_info(name)
        if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            return None
        dims = vi.type.tensor_type.shape.dim
        return [d.dim_value for d in dims] if all(d.HasField("dim_value") for d in dims) else None


class NoValidInputs(ValueError):
    """Raised by an input-domain hook when the shapes admit no input the op's specification allows (e.g.
    ScatterElements without a reduction, more indices along the axis than positions: one must repeat)."""


class InputDomain:
    """The random inputs of a one-node model being drawn: `values` (graph input name -> array) may be overwritten
    with values valid for the op; `inits` holds the constant inputs."""

    def __init__(self, node: onnx.NodeProto, values: dict, inits: dict, rng: np.random.Generator):
        self.node, self.values, self.inits, self.rng = node, values, inits, rng
        self.a = attrs(node)

    def free(self, pos: int) -> str | None:
        """The name of input `pos` if it is drawn at random (present and not a constant), else None."""
        ins = self.node.input
        return ins[pos] if len(ins) > pos and ins[pos] in self.values else None

    def shape(self, pos: int) -> tuple[int, ...]:
        name = self.node.input[pos]
        return (self.values[name] if name in self.values else self.inits[name]).shape

    def value(self, pos: int) -> np.ndarray | None:
        name = self.node.input[pos] if len(self.node.input) > pos else ""
        return self.values.get(name, self.inits.get(name))


def torch_device(torch) -> str:
    """Where PyTorch counterparts put their constants: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


RewriteFn = Callable[[Emitter, onnx.NodeProto, dict], bool]
InputsFn = Callable[[InputDomain], None]
# (torch module, node, constant inputs by position) -> a callable of the node's runtime inputs (as tensors).
TorchFn = Callable[[object, onnx.NodeProto, dict[int, np.ndarray]], Callable]


@dataclass(frozen=True)
class OpRule:
    """Everything opforge knows about one ONNX op type (or a family sharing the knowledge)."""

    op_types: tuple[str, ...]
    domain: str = ""  # "" is ai.onnx
    lowering: Lowering = "tvm"  # the main way the op's kernels are made, for the op table
    summary: str = ""  # one line for `opforge ops` and docs/ops.md
    rewrite: RewriteFn | None = None  # emits the node's replacement before TVM; False: keep the node
    expand_body: Callable[[onnx.NodeProto], bool] | None = None  # TVM converts it wrongly: expand its function body
    refuse: Callable[[onnx.NodeProto, dict], str | None] | None = None  # a reason to refuse, else None
    # A reason to refuse that depends on the graph around the node (its constant inputs' values, which dims are
    # symbolic), asked of the same lowered forms as `refuse`.
    refuse_in_graph: Callable[[Emitter, onnx.NodeProto, dict], str | None] | None = None
    kernels: dict[str, str] = field(default_factory=dict)  # Relax op -> "module:function(threads, config)"
    inputs: InputsFn | None = None  # makes drawn inputs valid for the op
    value_range: tuple[float, float] | None = None  # float inputs drawn uniformly in this range
    torch: TorchFn | None = None  # the op in PyTorch, for benchmark contenders
    torch_note: str = ""  # where the counterpart differs from ONNX (then it is marked, not used)
    # For shape inference only, where there is no exact `rewrite`: ONNX ops whose outputs have the node's output
    # types and shapes (DynamicQuantizeLSTM as an LSTM), so the nodes after it get shapes.
    shapes: RewriteFn | None = None
    # Input positions that stay run-time inputs of the plugin even when the model gives them as constants (the
    # weights of quantized MatMul/Conv): TensorRT passes the initializer to the plugin as a constant tensor, the
    # values do not become plugin fields, and nodes differing only in weights share one plan.
    weights: tuple[int, ...] = ()
    # Attribute values the differential fuzzer enumerates in full (their cross product, one case per point),
    # beyond the values the op's conformance forms use: the parameter space real models live in.
    fuzz_grid: dict[str, tuple] = field(default_factory=dict)
    # Whether the node's output extent depends on its input values (given the node and the graph's constant
    # tensor names): its plugin writes a size tensor, and the node is not fused with the nodes that consume it.
    data_dependent: Callable[[onnx.NodeProto, set[str]], bool] | None = None

    @property
    def has_input_domain(self) -> bool:
        return self.inputs is not None or self.value_range is not None
