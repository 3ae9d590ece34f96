"""The kernel plan: kernels, their launches in order and the buffers they bind, all sizes as shape expressions.

Plain data, JSON-serialisable and versioned. It is produced by opforge.lower (with TVM) and consumed without TVM by
the launcher (opforge.runtime), the plugin emitter (opforge.emit) and the checks. Every size is an expression of
opforge.core.expr over the dimension names in `dims`, each read at run time from one axis of one input.

Data-dependent output extents (NonZero, Unique, Compress) are named by `sizes`: a SizeTensor is an extra 0-d output
(after the ONNX outputs) that the kernels write the extent into on the device, with an upper bound over the input
dims. An output's shape names the size tensor on that axis; everything that allocates (the launcher, the harness,
TensorRT) evaluates the name as its upper bound, and the real extent is read from the size tensor after the
kernels ran. The kernels write such an output densely for its real shape (a prefix of the allocation), as
TensorRT expects of an output whose shape has a size tensor in it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from opforge.core import dtypes, expr

PLAN_VERSION = 2  # 2: data-dependent output extents (`sizes`)
# Older versions that still load as they are: version 1 plans have no `sizes`.
_LOADABLE_VERSIONS = (1, 2)
WORKSPACE_ALIGNMENT = 256  # bytes; every workspace slice starts on this boundary
# The most kernel launches a plan may hold. TVM's NegativeLogLikelihoodLoss import unrolls a slice-and-mean per
# element of a static (7, 33, 33) target: 7627 launches, a launcher function cc1plus took over 40 minutes on, and as
# many launches per enqueue. Recurrent ops and LinearAttention unrolled over a sequence reach about 400.
MAX_LAUNCHES = 1024
# Bumped whenever opforge's lowering changes what plan a subgraph gets (with or without a tuned configuration): it
# invalidates cached plans (plan.planner) and tuning records (tune.records), whose measurements were of the old
# plans.
LOWERING_REVISION = 49

ArgKind = Literal["input", "output", "workspace", "constant", "scalar"]


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list[str]  # one expression per axis

    def numel(self) -> str:
        return expr.product(self.shape)

    def nbytes(self) -> str:
        return expr.product([*self.shape, str(dtypes.by_name(self.dtype).itemsize)])


@dataclass
class DimSource:
    """A symbolic dimension and where its value is read: axis `axis` of input `input`."""

    name: str
    input: int
    axis: int


@dataclass
class SizeTensor:
    """A data-dependent extent: the value of 0-d output `output`, written by the kernels, at most `upper`.

    `name` stands for the extent in output shapes; `opt` is the value TensorRT tunes for (declareSizeTensor's opt).
    Both bounds are expressions over the plan's input dimensions."""

    name: str
    output: int
    upper: str
    opt: str


@dataclass
class ConstantSpec:
    """A tensor baked into the plan (an index table, an ONNX initializer the kernels read)."""

    name: str
    dtype: str
    shape: list[int]
    data: str  # base64 of the little-endian bytes

    @classmethod
    def from_array(cls, name: str, array: np.ndarray) -> ConstantSpec:
        a = np.array(array, order="C", copy=True)  # ascontiguousarray would make a 0-d array 1-d
        return cls(name, dtypes.from_numpy(a.dtype).name, list(a.shape), base64.b64encode(a.tobytes()).decode())

    def to_array(self) -> np.ndarray:
        raw = base64.b64decode(self.data)
        return np.frombuffer(raw, dtype=dtypes.numpy_dtype(self.dtype)).reshape(self.shape).copy()


@dataclass
class KernelArg:
    """One kernel parameter: a pointer into an input/output/constant/workspace slice, or a scalar."""

    kind: ArgKind
    dtype: str  # element dtype for pointers, value dtype for scalars
    index: int = -1  # input, output or constant index
    offset: str = "0"  # byte offset into the workspace
    value: str = ""  # scalar expression


@dataclass
class Launch:
    kernel: str  # extern "C" entry name in cuda_source
    grid: list[str]  # 3 expressions
    block: list[str]  # 3 expressions
    shared_mem: str  # dynamic shared memory bytes
    args: list[KernelArg]


@dataclass
class KernelPlan:
    key: str  # content hash of what the plan was made from: identical nodes share it
    op_type: str
    dims: list[DimSource]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    constants: list[ConstantSpec]
    launches: list[Launch]
    workspace: str  # total workspace bytes
    cuda_source: str
    target: str = "sm_90"
    producer: str = ""  # e.g. "tvm 0.27.0 dlight-default"
    version: int = PLAN_VERSION
    notes: list[str] = field(default_factory=list)
    sizes: list[SizeTensor] = field(default_factory=list)

    @property
    def nb_onnx_outputs(self) -> int:
        """The outputs the ONNX node has: all outputs but the size tensors, which come last."""
        return len(self.outputs) - len(self.sizes)

    # -- serialisation ----------------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> KernelPlan:
        d = json.loads(text)
        if d.get("version") not in _LOADABLE_VERSIONS:
            raise ValueError(
                f"kernel plan version {d.get('version')} is not one of {_LOADABLE_VERSIONS}: regenerate the plan"
            )
        return cls(
            key=d["key"],
            op_type=d["op_type"],
            dims=[DimSource(**x) for x in d["dims"]],
            inputs=[TensorSpec(**x) for x in d["inputs"]],
            outputs=[TensorSpec(**x) for x in d["outputs"]],
            constants=[ConstantSpec(**x) for x in d["constants"]],
            launches=[Launch(**{**x, "args": [KernelArg(**a) for a in x["args"]]}) for x in d["launches"]],
            workspace=d["workspace"],
            cuda_source=d["cuda_source"],
            target=d["target"],
            producer=d["producer"],
            version=d["version"],
            notes=d.get("notes", []),
            sizes=[SizeTensor(**x) for x in d.get("sizes", [])],
        )

    def save(self, path: str | Path) -> None:
        from opforge.core.fsutil import atomic_write_text

        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> KernelPlan:
        return cls.from_json(Path(path).read_text())

    # -- evaluation -------------------------------------------------------------------------------------------
    def bind_dims(self, input_shapes: list[tuple[int, ...]]) -> dict[str, int]:
        """Dimension values for concrete input shapes; checks every static axis as well."""
        if len(input_shapes) != len(self.inputs):
            raise ValueError(f"plan {self.key} takes {len(self.inputs)} inputs, got {len(input_shapes)}")
        env = {d.name: int(input_shapes[d.input][d.axis]) for d in self.dims}
        for spec, shape in zip(self.inputs, input_shapes):
            want = [expr.evaluate(e, env) for e in spec.shape]
            if list(shape) != want:
                raise ValueError(f"input {spec.name}: shape {tuple(shape)} does not fit the plan's {spec.shape}")
        for s in self.sizes:  # a data-dependent extent is allocated at its upper bound
            env[s.name] = expr.evaluate(s.upper, env)
        return env

    def output_shapes(self, env: dict[str, int]) -> list[tuple[int, ...]]:
        """The outputs' allocated shapes (data-dependent extents at their upper bounds, as bind_dims gives them)."""
        return [tuple(expr.evaluate(e, env) for e in o.shape) for o in self.outputs]

    def trim_outputs(self, env: dict[str, int], outputs: list[np.ndarray]) -> list[np.ndarray]:
        """The ONNX outputs at their real shapes, from host copies of all outputs at their allocated shapes: each
        size tensor's value replaces its upper bound, and an output with a data-dependent extent is the dense
        prefix of its allocation. Raises ValueError where a size tensor lies outside [0, upper]."""
        real = dict(env)
        for s in self.sizes:
            value = int(np.asarray(outputs[s.output]).reshape(-1)[0])
            if not 0 <= value <= env[s.name]:
                raise ValueError(f"size tensor {s.name} (output {s.output}) is {value}, outside [0, {env[s.name]}]")
            real[s.name] = value
        out = []
        for spec, a in zip(self.outputs[: self.nb_onnx_outputs], outputs):
            shape = tuple(expr.evaluate(e, real) for e in spec.shape)
            if shape != a.shape:
                a = np.ascontiguousarray(a).reshape(-1)[: int(np.prod(shape, dtype=np.int64))].reshape(shape)
            out.append(a)
        return out
