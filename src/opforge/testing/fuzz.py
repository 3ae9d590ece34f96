"""Differential fuzzing of opforge against ONNX's reference, over every op type the conformance suite has a
one-node form of.

Generation (CPU, deterministic from one integer seed): the conformance suite's one-node models are the seeds of
valid node forms (shape-like inputs baked as constants, as `conformance.case_subgraph` does). Each fuzz case takes
one form of its op and mutates it with its own seeded numpy Generator:

- shapes: every distinct dimension size of the runtime inputs is mapped to a new size, consistently across inputs
  (so equal dims stay equal: matmul K, broadcast partners), from a regime drawn per case — tiny (1..4), small
  (1..40, odd sizes), medium (up to 300, non-multiples of 32) or large (one dim up to 4096); size-1 dims mostly stay.
  Shape-like constants (Reshape's shape, Expand's shape, Resize's sizes) follow the same map. Tensors stay under
  MAX_ELEMENTS elements: tensors over 2^31 elements are not generated (they need 8+ GB per tensor; out of scope);
- dtypes: the float tensors switch together among float32 / float16 / bfloat16, the integer data tensors among
  int32 / int64 / int8 / uint8 (bool stays), where the schema's type constraints allow (checked by onnx.checker);
- attributes: each attribute takes, at random, another value the op's seed forms use (so combinations across
  forms arise: modes x axes x flags); integer `axis` attributes range over [-rank, rank);
- constant vs runtime: sometimes one non-first runtime input becomes a constant (an initializer).

A mutation is kept only if onnx.checker accepts the model, the inputs drawn from the op's input domain in the
registry (`opforge.verify.inputs.make_inputs`) run through ONNX's reference (`onnx.reference.ReferenceEvaluator`,
onnxruntime where the reference fails or takes over REFERENCE_TIMEOUT_S) and every output is a tensor TensorRT can
hold; otherwise the next try draws again (the last try keeps the seed form's shapes and types). The expected
outputs are computed here, on the CPU, and stored with the case.

Each case is recorded with its seed, its model bytes and the mutation made, so a failure replays:
`python scripts/fuzz.py replay BUNDLE CASE` (CPU: lower, run on TVM llvm; GPU: through the harness).

Build and run reuse the conformance runner (`opforge.testing.conformance.build` / `run`): one plugin per distinct
plan, PLUGINS_PER_LIBRARY per library, two poisons, two execution contexts.
"""

from __future__ import annotations

import json
import re
import signal
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from opforge.core import dtypes
from opforge.testing import conformance
from opforge.testing.conformance import Case

BUILD_RECORD = "fuzz-build.json"
MAX_ELEMENTS = 1 << 22  # per tensor (16 MB of float32): the GPU run stays short and the references fast
REFERENCE_TIMEOUT_S = 4
# The run side recomputes the reference that answered on the build machine within REFERENCE_TIMEOUT_S: the GPU
# host's Python may be slower (RoiAlign's adaptive grids in ONNX's reference took over 4 s there).
RUN_REFERENCE_TIMEOUT_S = 120
STORED_CASE_BYTES = 32 << 10  # arrays of larger cases are drawn again on the run side (the bundle stays small)
TRIES = 8
LOWER_TIMEOUT_S = 60  # per case on the build machine; slower lowerings are recorded as lower-failed

_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
_INTS = (TensorProto.INT32, TensorProto.INT64, TensorProto.INT8, TensorProto.UINT8)
_SHAPE_VALUED = {"shape", "sizes", "output_shape"}  # constant inputs whose values are dims of the inputs

# Attributes tied to the node's structure (its number of outputs): never recombined. (A Split whose num_outputs
# differs from its outputs aborts the process inside onnx's C++ shape inference.)
_STRUCTURAL_ATTRIBUTES = {"num_outputs"}

# Ops whose results are not a function of the node alone, or whose reference is not an oracle.
_SKIP_OPS = {"Constant", "ConstantOfShape", "EyeLike", "Shape", "Size"}

# Known, explained differences between ONNX's reference and a correct implementation, keyed by op type and the
# outputs a correct implementation computes instead: a case whose result differs from ONNX's reference is
# explained only when its result matches those (never a tolerance change); the explanation is written on its row.
_SAME_POOL_TEXT = (
    "ONNX's reference pools with auto_pad SAME_* do not follow the spec's padding (MaxPool SAME_LOWER gives "
    "floor-sized outputs; dilated SAME pools pad with the undilated kernel and write zeros past it): the same node "
    "with the explicit pads the spec defines (output ceil(in / stride)) gives other outputs under the same "
    "reference, and onnxruntime agrees with that explicit form; opforge computes the spec's padding"
)
KNOWN_EXPLANATIONS: list[tuple[str, str, str]] = [
    # (op type, alternative (a function in _ALTERNATIVES: what a correct implementation computes), explanation)
    (
        "Cast",
        "float_to_bfloat16",
        "ONNX's reference rounds float32 -> bfloat16 by truncation in some versions; round-to-nearest-even is "
        "the IEEE (and CUDA) rule",
    ),
    *[(op, "same_pads_reference", _SAME_POOL_TEXT) for op in ("AveragePool", "LpPool", "MaxPool")],
    (
        "GridSample",
        "cubic_padding_reference",
        "ONNX's reference clamps (border) or reflects a cubic sample's coordinate before taking its 4x4 "
        "neighbourhood (onnx/reference/ops/op_grid_sample.py); onnxruntime and PyTorch's grid_sample keep the "
        "coordinate and clamp or reflect each of the 16 taps. The spec says only 'border values for out-of-bound "
        "grid locations'; on this case onnxruntime differs from ONNX's reference beyond the tolerance, and opforge "
        "(TVM's GridSample) computes what onnxruntime does",
    ),
    (
        "AveragePool",
        "ceil_window_reference",
        "With ceil_mode=1 and count_include_pad=1, a last window that reaches past the padded input is averaged "
        "differently by ONNX's reference than by onnxruntime and PyTorch, which divide by the taps inside the "
        "padded input (the spec counts pad pixels, and the overhang is none); on this case the two references "
        "differ beyond the tolerance, and opforge computes what onnxruntime does",
    ),
    (
        "LpNormalization",
        "l1_of_signed_values",
        "ONNX's reference computes the p=1 norm as sum(x), not sum(|x|) (onnx/reference/ops/op_lp_normalization.py: "
        "np.power(x, p).sum()); the spec's L1 norm and the conformance tests' expected outputs use |x| "
        "(np.sum(abs(x))), so lines holding negative values differ",
    ),
]


@dataclass
class FuzzCase:
    """One generated case: a one-node model (shape-like inputs constant), its runtime inputs and ONNX's outputs."""

    name: str
    op_type: str
    seed: list[int]
    form: str  # the conformance case it was mutated from
    model: onnx.ModelProto
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    mutation: dict = field(default_factory=dict)
    reference: str = "onnx"  # "onnx" (ReferenceEvaluator) or "onnxruntime"
    # The family's node with symbolic dims (the dims its shape siblings vary), lowered into one plugin shared by
    # the family; None: this case's static shapes only.
    symbolic: onnx.ModelProto | None = None
    family: str = ""

    def as_case(self) -> Case:
        if self.symbolic is None:
            return Case(self.name, self.op_type, self.model, self.inputs, self.outputs)
        return Case(self.name, self.op_type, self.symbolic, self.inputs, self.outputs, static_model=self.model)

    def record(self) -> dict:
        return {
            "case": self.name,
            "op_type": self.op_type,
            "seed": self.seed,
            "form": self.form,
            "mutation": self.mutation,
            "reference": self.reference,
            "input_shapes": [list(x.shape) for x in self.inputs],
            "input_dtypes": [dtypes.from_numpy(x.dtype).name for x in self.inputs],
            "family": self.family or self.name,
            "symbolic_dims": _symbolic_dims(self.symbolic),
        }


# --- seed forms ------------------------------------------------------------------------------------------------


def seed_forms(cases: list[Case] | None = None) -> dict[str, list[tuple[str, onnx.ModelProto]]]:
    """op type -> [(conformance case name, one-node model with shape-like inputs baked)], eligible forms only."""
    cases = conformance.load_cases() if cases is None else cases
    forms: dict[str, list[tuple[str, onnx.ModelProto]]] = defaultdict(list)
    for c in cases:
        if len(c.model.graph.node) != 1 or c.op_type in _SKIP_OPS:
            continue
        node = c.model.graph.node[0]
        if node.domain not in ("", "ai.onnx") or conformance.ineligible_reason(c.model):
            continue
        if any(not isinstance(x, np.ndarray) for x in c.inputs):
            continue
        sub, _baked = conformance.case_subgraph(c)
        used = [vi for vi in sub.model.graph.input if vi.name in node.input]  # expanded forms may leave extras
        del sub.model.graph.input[:]
        sub.model.graph.input.extend(used)
        if not sub.model.graph.input:
            continue  # all inputs constant: nothing runs at run time
        forms[c.op_type].append((c.name, sub.model))
    return dict(forms)


def _attr_pool(forms: list[tuple[str, onnx.ModelProto]]) -> dict[str, list[onnx.AttributeProto]]:
    pool: dict[str, dict[bytes, onnx.AttributeProto]] = defaultdict(dict)
    for _name, m in forms:
        for a in m.graph.node[0].attribute:
            if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                continue
            pool[a.name][a.SerializeToString(deterministic=True)] = a
    return {k: list(v.values()) for k, v in pool.items()}


# --- mutation --------------------------------------------------------------------------------------------------

_REGIMES = {
    "tiny": [1, 2, 3, 4],
    "small": [1, 2, 3, 5, 7, 9, 13, 17, 24, 31, 33, 40],
    "medium": [1, 5, 17, 33, 63, 65, 97, 100, 127, 129, 255, 300],
    "large": [1, 7, 33, 257, 1000, 1023, 2049, 4096],
}


def _shape_of(vi: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


def _set_shape(vi: onnx.ValueInfoProto, shape: list[int]) -> None:
    t = vi.type.tensor_type
    t.ClearField("shape")
    t.shape.SetInParent()
    for d in shape:
        t.shape.dim.add().dim_value = int(d)


# (input index, axis, size) the ONNX spec fixes for an op, where its shape inference does not enforce it.
SPEC_FIXED_SIZES = {"NonMaxSuppression": ((0, 2, 4),)}


def _structural_sizes(m: onnx.ModelProto) -> set[int]:
    """Dim sizes of the runtime inputs the node's schema ties to its attributes or to other constants (RoiAlign's
    rois are [num_rois, 4]): changing one alone fails ONNX's strict shape inference, or contradicts kernel_shape.
    They keep their size."""
    sizes = {d for vi in m.graph.input for d in _shape_of(vi) if d > 1}
    fixed = set()
    for s in sizes:
        t = onnx.ModelProto()
        t.CopyFrom(m)
        del t.graph.value_info[:]
        for vi in t.graph.input:
            _set_shape(vi, [s + 1 if d == s else d for d in _shape_of(vi)])
        for vi in t.graph.output:
            vi.type.tensor_type.ClearField("shape")
        try:
            onnx.shape_inference.infer_shapes(t, check_type=True, strict_mode=True)
        except Exception:
            fixed.add(s)
    # Sizes the spec fixes but ONNX's shape inference does not check: NonMaxSuppression's boxes are [B, N, 4] (a box
    # count of 4 shared the coordinates' symbol, and a sibling with 24 boxes no longer fit the plan).
    node = m.graph.node[0]
    for k, axis, size in SPEC_FIXED_SIZES.get(node.op_type, ()):
        vi = next((v for v in m.graph.input if k < len(node.input) and v.name == node.input[k]), None)
        if vi is not None and len(_shape_of(vi)) > axis and _shape_of(vi)[axis] == size:
            fixed.add(size)
    # A convolution's kernel_shape restates its weight's spatial dims, which shape inference does not check: a
    # weight resized alone makes a node that contradicts itself.
    if any(a.name == "kernel_shape" for a in node.attribute) and len(node.input) > 1:
        weight = next((vi for vi in m.graph.input if vi.name == node.input[1]), None)
        if weight is not None:
            fixed |= {d for d in _shape_of(weight)[2:] if d > 1}
    return fixed


def _mutate(
    model: onnx.ModelProto,
    pool: dict,
    rng: np.random.Generator,
    plain: bool,
    forced: dict | None = None,
    fixed: set[int] | None = None,
) -> tuple[onnx.ModelProto, dict]:
    """A mutated copy of a seed form and what was changed (`plain`: attributes and types only, shapes kept;
    `forced`: attribute values set last, a point of the op's fuzz grid; `fixed`: the form's _structural_sizes)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    node = g.node[0]
    what: dict = {}
    del g.value_info[:]
    # shapes
    dims = sorted({d for vi in g.input for d in _shape_of(vi) if d > 1})
    if dims and not plain:
        regime = str(rng.choice(list(_REGIMES), p=[0.3, 0.35, 0.25, 0.1]))
        sizes = _REGIMES[regime]
        new = {d: (int(rng.choice(sizes)) if rng.random() < 0.7 else d) for d in dims}
        for d in _structural_sizes(model) if fixed is None else fixed:  # drawn like the others, then kept
            new[d] = d
        if regime == "large":  # one large dim at most; the others small
            big = [d for d in dims if new[d] > 300]
            for d in big[1:]:
                new[d] = int(rng.choice(_REGIMES["small"]))
        for vi in g.input:
            _set_shape(vi, [new.get(d, d) for d in _shape_of(vi)])
        opset = conformance.opset_of(m)
        for t in g.initializer:
            role = conformance._input_name(node, list(node.input).index(t.name), opset) if t.name in node.input else ""
            if role in _SHAPE_VALUED and t.data_type == TensorProto.INT64:
                v = numpy_helper.to_array(t)
                t.CopyFrom(
                    numpy_helper.from_array(
                        np.array([new.get(int(x), int(x)) for x in v.ravel()], np.int64).reshape(v.shape), t.name
                    )
                )
        what["dims"] = {str(k): v for k, v in new.items() if k != v}
        what["regime"] = regime
    # dtypes
    types = [vi.type.tensor_type.elem_type for vi in [*g.input, *g.output]]
    for family in (_FLOATS, _INTS):
        present = {t for t in types if t in family}
        if len(present) == 1 and rng.random() < 0.45:
            old = present.pop()
            to = int(rng.choice([t for t in family if t != old]))
            for vi in [*g.input, *g.output]:
                if vi.type.tensor_type.elem_type == old:
                    vi.type.tensor_type.elem_type = to
            for t in g.initializer:
                if t.data_type == old and not _index_like(node, t.name, m):
                    arr = numpy_helper.to_array(t).astype(dtypes.numpy_dtype(dtypes.from_onnx(to).name))
                    t.CopyFrom(numpy_helper.from_array(arr, t.name))
            for a in node.attribute:  # Cast's `to`, ConstantOfShape-like `dtype` follow
                if a.name in ("to", "dtype") and a.i == old:
                    a.i = to
            what.setdefault("dtypes", []).append(f"{dtypes.from_onnx(old).name}->{dtypes.from_onnx(to).name}")
    # attributes
    changed = []
    for name, values in pool.items():
        if name in _STRUCTURAL_ATTRIBUTES or rng.random() < 0.5:
            continue
        choice = values[int(rng.integers(len(values)))]
        for k, a in enumerate(node.attribute):
            if a.name == name:
                node.attribute[k].CopyFrom(choice)
                break
        else:
            node.attribute.append(choice)
        changed.append(name)
    for name, other in exclusive_attributes(m):  # the spec forbids the pair: keep one of the two, at random
        drop = name if rng.random() < 0.5 else other
        keep = [a for a in node.attribute if a.name != drop]
        del node.attribute[:]
        node.attribute.extend(keep)
        what.setdefault("dropped", []).append(drop)
    rank = len(_shape_of(g.input[0])) if g.input else 0
    for a in node.attribute:
        if a.name == "axis" and a.type == onnx.AttributeProto.INT and rank and rng.random() < 0.4:
            a.i = int(rng.integers(-rank, rank))
            changed.append("axis")
    for name, value in (forced or {}).items():
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute(name, value)])
        changed.append(name)
    if changed:
        what["attributes"] = {a.name: _attr_text(a) for a in node.attribute if a.name in changed}
        if not what["attributes"]:
            del what["attributes"]
    # outputs: shapes come from the reference
    for vi in g.output:
        vi.type.tensor_type.ClearField("shape")
    return m, what


def _attr_text(a: onnx.AttributeProto):
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v).tolist()
    if isinstance(v, (list, tuple)):
        return [x.decode(errors="replace") if isinstance(x, bytes) else x for x in v]
    return v


def _index_like(node: onnx.NodeProto, name: str, m: onnx.ModelProto) -> bool:
    role = (
        conformance._input_name(node, list(node.input).index(name), conformance.opset_of(m))
        if name in node.input
        else ""
    )
    return role in conformance.SHAPE_LIKE_INPUTS or role in ("indices", "batch_indices")


_EXCLUSIVE = re.compile(r"cannot be used simultaneously with (\w+) attribute")


def exclusive_attributes(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(attribute, other) pairs the one-node model sets together although the op's specification forbids it.

    The rule is read off the schema's attribute descriptions, for every op alike: an attribute that "cannot be used
    simultaneously with X attribute" (Conv's, ConvTranspose's and the pools' `pads` with `auto_pad`) is invalid
    together with X set to anything but X's default (auto_pad NOTSET means explicit padding). onnx.checker does
    not enforce it; such nodes have no defined result (ONNX's reference, onnxruntime and TVM each resolve them
    differently)."""
    node = model.graph.node[0]
    opset = next((o.version for o in model.opset_import if o.domain == node.domain), None)
    try:
        schema = onnx.defs.get_schema(node.op_type, opset or onnx.defs.onnx_opset_version(), node.domain)
    except onnx.defs.SchemaError:
        return []
    given = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    out = []
    for name in given:
        spec = schema.attributes.get(name)
        match = _EXCLUSIVE.search(spec.description) if spec is not None else None
        other = match.group(1) if match else None
        if other is None or other not in given or other not in schema.attributes:
            continue
        default = schema.attributes[other].default_value
        if not default.name or given[other] != helper.get_attribute_value(default):
            out.append((name, other))
    return out


def spec_violation(model: onnx.ModelProto) -> str | None:
    """Why the one-node model breaks a rule of its op's specification that onnx.checker does not enforce, else
    None (see exclusive_attributes)."""
    pairs = exclusive_attributes(model)
    if not pairs:
        return None
    node = model.graph.node[0]
    name, other = pairs[0]
    value = next(_attr_text(a) for a in node.attribute if a.name == other)
    return f"{node.op_type}: {name} cannot be used together with {other}={value}"


class _Timeout(Exception):
    pass


def _alarm(_sig, _frame):
    raise _Timeout()


def reference_outputs(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], first: str = "onnx", timeout_s: int = REFERENCE_TIMEOUT_S
) -> tuple[list[np.ndarray], str]:
    """ONNX's reference outputs (onnxruntime where the reference fails or is slow) and which one gave them;
    first="onnxruntime" tries onnxruntime first (the run side, for large cases: ONNX's reference is Python).

    A model with float16/bfloat16 tensors is also run widened to float32 (the same values, exactly) and its
    half outputs are that result rounded once to their type: the exact answer a half-precision plugin should
    give. ONNX's reference computes in the half type itself (NumPy sums bfloat16 in bfloat16: a running sum near
    1024 grows by 8 at a time), so its half outputs carry its own rounding; TensorRT users judge a half engine
    against float32 too. The reference is then named "<reference> (float32)"."""
    outs, ref = _faithful_reference(model, feeds, first, timeout_s)
    wide_model, wide_feeds = _widened(model, feeds)
    if wide_model is None:
        return outs, ref
    try:
        wide, _ = _faithful_reference(wide_model, wide_feeds, ref, timeout_s)
    except ValueError:
        return outs, ref
    if len(wide) != len(outs) or any(np.shape(w) != np.shape(o) for w, o in zip(wide, outs)):
        return outs, ref
    rounded = [np.asarray(w).astype(o.dtype) if o.dtype in _half_numpy() else o for w, o in zip(wide, outs)]
    return rounded, f"{ref} (float32)"


@cache
def _half_numpy() -> tuple[np.dtype, ...]:
    """float16 and bfloat16 as NumPy dtypes."""
    return (np.dtype(np.float16), np.dtype(dtypes.numpy_dtype("bfloat16")))


def _widened(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray]
) -> tuple[onnx.ModelProto | None, dict[str, np.ndarray]]:
    """The model with its float16/bfloat16 inputs, outputs and initializers made float32 (values upcast
    exactly), and the feeds likewise; (None, feeds) when the model holds no half tensor."""
    half = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
    g = model.graph
    if not any(vi.type.tensor_type.elem_type in half for vi in [*g.input, *g.output]) and not any(
        t.data_type in half for t in g.initializer
    ):
        return None, feeds
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in [*m.graph.input, *m.graph.output]:
        if vi.type.tensor_type.elem_type in half:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    for t in m.graph.initializer:
        if t.data_type in half:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    del m.graph.value_info[:]
    wide = {k: (v.astype(np.float32) if v.dtype in _half_numpy() else v) for k, v in feeds.items()}
    return m, wide


def _faithful_reference(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], first: str = "onnx", timeout_s: int = REFERENCE_TIMEOUT_S
) -> tuple[list[np.ndarray], str]:
    """ONNX's reference (onnxruntime where it fails or takes over `timeout_s`) on the model as it is."""
    first = "onnxruntime" if first.startswith("onnxruntime") else "onnx"
    from onnx.reference import ReferenceEvaluator

    if first == "onnxruntime":
        try:
            return _onnxruntime(model, feeds), "onnxruntime"
        except Exception:
            pass

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout_s)
    try:
        with np.errstate(all="ignore"):
            outs = ReferenceEvaluator(model).run(None, feeds)
        return [np.asarray(o) for o in outs], "onnx"
    except _Timeout:
        err: Exception = TimeoutError(f"reference over {timeout_s}s")
    except (NotImplementedError, RuntimeError) as e:  # the reference lacks the op or the form
        err = e
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    try:
        return _onnxruntime(model, feeds), "onnxruntime"
    except Exception as e2:
        raise ValueError(
            f"no reference: {type(err).__name__}: {str(err)[:100]}; onnxruntime: {str(e2)[:100]}"
        ) from None


def _onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs, for a model that passes ONNX's strict shape inference first (onnxruntime aborts the
    process on some invalid nodes, e.g. Split with fewer outputs than num_outputs)."""
    import onnxruntime as ort

    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)

    so = ort.SessionOptions()
    so.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def _draw(model: onnx.ModelProto, rng: np.random.Generator, make_constant: bool):
    """Inputs from the op's input domain; optionally one non-first runtime input turned into a constant."""
    from opforge.verify.inputs import make_inputs

    g = model.graph
    shapes = [tuple(_shape_of(vi)) for vi in g.input]
    if any(int(np.prod(s, dtype=np.int64)) > MAX_ELEMENTS for s in shapes):
        raise ValueError("tensor over MAX_ELEMENTS")
    values = make_inputs(model, shapes, rng)
    constant = None
    if make_constant and len(g.input) > 1:
        k = int(rng.integers(1, len(g.input)))
        constant = g.input[k].name
        g.initializer.append(numpy_helper.from_array(values[k], constant))
        del g.input[k]
        del values[k]
    return values, constant


def _check_inferred_shapes(m: onnx.ModelProto, outs: list[np.ndarray]) -> None:
    """Raises when ONNX's shape inference gives an output a static shape other than the reference's: the node
    contradicts itself (ConvTranspose's kernel_shape attribute against its weight's shape, which shape inference
    does not check) and the answer depends on which one an implementation reads."""
    t = onnx.ModelProto()
    t.CopyFrom(m)
    del t.graph.value_info[:]
    for vi in t.graph.output:
        vi.type.tensor_type.ClearField("shape")
    try:
        g = onnx.shape_inference.infer_shapes(t, strict_mode=True).graph
    except Exception:
        return  # no inference to disagree with
    for vi, o in zip(g.output, outs):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if len(dims) != o.ndim or any(d is not None and d != n for d, n in zip(dims, o.shape)):
            raise ValueError(f"the reference's output shape {list(o.shape)} is not ONNX's inferred {dims}")


def _complete(m: onnx.ModelProto, values: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    """The reference's outputs on `values`, written into the model's output types and shapes; raises when the
    case is not valid (no reference, outputs not small tensors, not a TensorRT-holdable model, checker fails)."""
    feeds = {vi.name: v for vi, v in zip(m.graph.input, values)}
    outs, ref = reference_outputs(m, feeds)
    if len(outs) != len(m.graph.output):
        raise ValueError("the reference gave another number of outputs")
    _check_inferred_shapes(m, outs)
    for vi, o in zip(m.graph.output, outs):
        if o.dtype == object or o.size > MAX_ELEMENTS:
            raise ValueError("output not a small tensor")
        vi.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(o.dtype)
        _set_shape(vi, list(o.shape))
    if conformance.ineligible_reason(m):
        raise ValueError("ineligible")
    onnx.checker.check_model(m, full_check=True)
    return outs, ref


def make_case(
    op: str,
    k: int,
    seed: int,
    forms: list[tuple[str, onnx.ModelProto]],
    forced: dict | None = None,
    omitted: str | None = None,
) -> FuzzCase | None:
    """The k-th case of `op` under `seed` (`forced`: the k-th point of the op's fuzz grid, then named
    <op>_g<k>; `omitted`: an attribute left out, so the schema's default applies: named <op>_d<k>):
    deterministic; None when no try gives a valid case."""
    case_seed = [seed, zlib.crc32(op.encode()), k] + ([1] if forced else []) + ([2] if omitted else [])
    rng = np.random.default_rng(case_seed)
    pool = {name: values for name, values in _attr_pool(forms).items() if name != omitted}
    form_name, form = forms[int(rng.integers(len(forms)))]
    fixed = _structural_sizes(form)  # the form's, the same for every try
    for attempt in range(TRIES):
        plain = attempt == TRIES - 1
        try:
            m, what = _mutate(form, {} if plain else pool, rng, plain, forced, fixed)
            if plain:
                what = {"grid": forced} if forced else {}
            if omitted:
                kept = [a for a in m.graph.node[0].attribute if a.name != omitted]
                del m.graph.node[0].attribute[:]
                m.graph.node[0].attribute.extend(kept)
                what["default"] = omitted
            if spec_violation(m):
                continue  # an invalid attribute combination: no defined result to compare with
            values, constant = _draw(m, rng, make_constant=not plain and rng.random() < 0.2)
            if constant:
                what["constant_input"] = constant
            outs, ref = _complete(m, values)
        except Exception:
            continue
        name = f"{op}_g{k:03d}" if forced else f"{op}_d{k:03d}" if omitted else f"{op}_{k:03d}"
        what["attempt"] = attempt
        if forced:
            what["grid"] = {n: _attr_text(helper.make_attribute(n, v)) for n, v in forced.items()}
        return FuzzCase(name, op, case_seed, form_name, m, values, outs, what, ref)
    return None


# --- shape siblings: one symbolic plugin, several shapes --------------------------------------------------------

FAMILY = 4  # cases per family: a generated case and up to FAMILY - 1 more shapes of the same node
SIBLING_TRIES = 4


def _symbolic_dims(m: onnx.ModelProto | None) -> list[str]:
    if m is None:
        return []
    return sorted({d.dim_param for vi in m.graph.input for d in vi.type.tensor_type.shape.dim if d.dim_param})


def _varying_sizes(m: onnx.ModelProto) -> list[int]:
    """The dim sizes of the runtime inputs a sibling changes: over 1 (size-1 dims broadcast), in no constant's
    shape (constants are the node's, shared by the family) and not tied by the schema (_structural_sizes)."""
    fixed = {int(d) for t in m.graph.initializer for d in t.dims} | _structural_sizes(m)
    return sorted({d for vi in m.graph.input for d in _shape_of(vi) if d > 1 and d not in fixed})


def siblings(base: FuzzCase, count: int = FAMILY - 1) -> list[FuzzCase]:
    """Up to `count` more cases of `base`'s node (same attributes, types and constants) at other sizes of its
    varying dims, each size mapped consistently across inputs (equal dims stay equal); deterministic."""
    sizes = _varying_sizes(base.model)
    out: list[FuzzCase] = []
    if not sizes:
        return out
    for j in range(1, count + 1):
        rng = np.random.default_rng([*base.seed, 7, j])
        for _attempt in range(SIBLING_TRIES):
            regime = str(rng.choice(list(_REGIMES), p=[0.3, 0.35, 0.25, 0.1]))
            new = {d: int(rng.choice([x for x in _REGIMES[regime] if x > 1])) for d in sizes}
            big = [d for d in sizes if new[d] > 300]
            for d in big[1:]:  # one large dim at most
                new[d] = int(rng.choice(_REGIMES["small"][1:]))
            if all(new[d] == d for d in sizes):
                continue
            m = onnx.ModelProto()
            m.CopyFrom(base.model)
            for vi in m.graph.input:
                _set_shape(vi, [new.get(d, d) for d in _shape_of(vi)])
            for vi in m.graph.output:
                vi.type.tensor_type.ClearField("shape")
            try:
                values, _ = _draw(m, rng, make_constant=False)
                outs, ref = _complete(m, values)
            except Exception:
                continue
            what = {**base.mutation, "sibling_of": base.name, "sibling_dims": {str(k): v for k, v in new.items()}}
            what["sibling_regime"] = regime
            out.append(
                FuzzCase(f"{base.name}_{j}", base.op_type, [*base.seed, 7, j], base.form, m, values, outs, what, ref)
            )
            break
    return out


def symbolic_model(base: FuzzCase, sibs: list[FuzzCase]) -> onnx.ModelProto:
    """`base`'s node with every input dim the siblings vary made symbolic (named after its size in `base`, so equal
    dims share a name); output shapes inferred symbolically by ONNX."""
    varied = {int(k) for s in sibs for k, v in s.mutation["sibling_dims"].items() if int(k) != v}
    m = onnx.ModelProto()
    m.CopyFrom(base.model)
    for vi in m.graph.input:
        for dim in vi.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value in varied:
                v = dim.dim_value
                dim.Clear()
                dim.dim_param = f"d{v}"
    for vi in m.graph.output:
        vi.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        shapes = {vi.name: vi.type.tensor_type for vi in [*inferred.graph.value_info, *inferred.graph.output]}
        for vi in m.graph.output:
            t = shapes.get(vi.name)
            if t is not None and t.HasField("shape"):
                vi.type.tensor_type.shape.CopyFrom(t.shape)
    except Exception:
        pass  # outputs without shapes: the lowering infers them
    return m


def family(base: FuzzCase, size: int = FAMILY) -> list[FuzzCase]:
    """`base` and its shape siblings, sharing one symbolic node (so one plugin) when there are siblings."""
    sibs = siblings(base, size - 1)
    if not sibs:
        return [base]
    sym = symbolic_model(base, sibs)
    for c in (base, *sibs):
        c.symbolic, c.family = sym, base.name
    return [base, *sibs]


def default_gaps(forms: list[tuple[str, onnx.ModelProto]]) -> list[str]:
    """The op's optional attributes every seed form sets, to values other than the schema's default: the default
    would never be generated (RoiAlign's forms all set sampling_ratio=2; its default 0, an adaptive grid, did not
    lower for the GPU). Each gets a case with the attribute left out."""
    node = forms[0][1].graph.node[0]
    version = max((o.version for o in forms[0][1].opset_import if o.domain == node.domain), default=1)
    try:
        schema = onnx.defs.get_schema(node.op_type, version, node.domain)
    except Exception:  # an op onnx does not define (a contrib op): no schema defaults to compare with
        return []
    always = set.intersection(*({a.name for a in m.graph.node[0].attribute} for _n, m in forms))
    pool = _attr_pool(forms)
    gaps = []
    for name in sorted(always):
        spec = schema.attributes.get(name)
        if spec is None or spec.required or spec.default_value.type == onnx.AttributeProto.UNDEFINED:
            continue
        default = helper.get_attribute_value(spec.default_value)
        if all(helper.get_attribute_value(a) != default for a in pool.get(name, [])):
            gaps.append(name)
    return gaps


def _grid(op: str) -> list[dict]:
    """The points of the op's fuzz grid (the registry's `fuzz_grid`: attribute values crossed in full)."""
    from itertools import product

    from opforge.ops import rule_for

    grid = rule_for(("", op)).fuzz_grid
    if not grid:
        return []
    names = sorted(grid)
    return [dict(zip(names, values)) for values in product(*(grid[n] for n in names))]


def generate(
    seed: int, per_op: int, ops: list[str] | None = None, forms=None, progress=None, family_size: int = FAMILY
) -> list[FuzzCase]:
    """About `per_op` cases for each op type with a seed form (or those in `ops`), in op order, in families of
    `family_size` shapes sharing one symbolic plugin; plus one case per point of the op's fuzz grid (registry);
    deterministic."""
    forms = seed_forms() if forms is None else forms
    out = []
    for op in sorted(forms):
        if ops is not None and op not in ops:
            continue
        mine: list[FuzzCase] = []
        for k, point in enumerate(_grid(op)):
            c = make_case(op, k, seed, forms[op], forced=point)
            if c is not None:
                mine.extend(family(c, family_size))
        on_grid = len(mine)
        for k in range(per_op):
            if len(mine) - on_grid >= per_op:
                break
            c = make_case(op, k, seed, forms[op])
            if c is not None:
                mine.extend(family(c, family_size))
        for k, name in enumerate(default_gaps(forms[op])):
            c = make_case(op, k, seed, forms[op], omitted=name)
            if c is not None:
                mine.extend(family(c, family_size))
        out.extend(mine)
        if progress:
            progress(f"{op}: {len(mine)} cases")
    return out


def _cast_to_bfloat16(case: FuzzCase) -> list[np.ndarray] | None:
    """Cast to bfloat16 rounded to nearest even (ml_dtypes' conversion)."""
    node = case.model.graph.node[0]
    if next((a.i for a in node.attribute if a.name == "to"), None) != TensorProto.BFLOAT16 or not case.inputs:
        return None
    return [np.asarray(case.inputs[0]).astype(np.float32).astype(dtypes.numpy_dtype("bfloat16"))]


def _spec_pads(case: FuzzCase) -> list[np.ndarray] | None:
    """A pool with auto_pad SAME_*: ONNX's reference of the same node with the explicit pads the spec defines."""
    from opforge.ops.auto_pad import explicit_pads

    g = case.model.graph
    node = (
        explicit_pads(g.node[0], _shape_of(g.input[0])) if g.input and g.input[0].name == g.node[0].input[0] else None
    )
    if node is None:
        return None
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    m.graph.node[0].CopyFrom(node)
    try:
        outs, _ = reference_outputs(m, {vi.name: v for vi, v in zip(g.input, case.inputs)})
    except ValueError:
        return None
    return outs


def _onnxruntime_outputs(case: FuzzCase) -> list[np.ndarray] | None:
    """onnxruntime's outputs on the case's inputs (half types widened, as the stored reference is, and rounded to
    the output types)."""
    feeds = {vi.name: v for vi, v in zip(case.model.graph.input, case.inputs)}
    wide_model, wide_feeds = _widened(case.model, feeds)
    try:
        theirs = _onnxruntime(wide_model or case.model, wide_feeds)
    except Exception:
        return None
    return [np.asarray(o).astype(r.dtype) for o, r in zip(theirs, case.outputs)]


def _cubic_border(case: FuzzCase) -> list[np.ndarray] | None:
    """Cubic GridSample with border/reflection padding: onnxruntime's outputs."""
    from opforge.ops.base import attrs, text

    a = attrs(case.model.graph.node[0])
    if text(a.get("mode"), "linear") != "cubic" or text(a.get("padding_mode"), "zeros") == "zeros":
        return None
    return _onnxruntime_outputs(case)


def _ceil_window(case: FuzzCase) -> list[np.ndarray] | None:
    """An AveragePool with ceil_mode=1 and count_include_pad=1: onnxruntime's outputs."""
    from opforge.ops.base import attrs

    a = attrs(case.model.graph.node[0])
    if not (a.get("ceil_mode", 0) and a.get("count_include_pad", 0)):
        return None
    return _onnxruntime_outputs(case)


def _l1_norm(case: FuzzCase) -> list[np.ndarray] | None:
    """LpNormalization with p = 1: x / sum(|x|) along the axis (in float64, rounded to the output type)."""
    from opforge.ops.base import attrs

    a = attrs(case.model.graph.node[0])
    if a.get("p", 2) != 1 or not case.inputs or not case.outputs:
        return None
    x = np.asarray(case.inputs[0], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = x / np.abs(x).sum(axis=int(a.get("axis", -1)), keepdims=True)
    return [y.astype(case.outputs[0].dtype)]


# What a correct implementation computes where ONNX's reference is known to be off (KNOWN_EXPLANATIONS): a
# function of the case giving the outputs, or None where it does not apply.
_ALTERNATIVES = {
    "cubic_padding_reference": _cubic_border,
    "ceil_window_reference": _ceil_window,
    "float_to_bfloat16": _cast_to_bfloat16,
    "same_pads_reference": _spec_pads,
    "l1_of_signed_values": _l1_norm,
}


def explained_alternative(case: FuzzCase) -> tuple[str, list[np.ndarray]] | None:
    """The known explanation of this case's divergence from ONNX's reference (KNOWN_EXPLANATIONS) and the outputs
    a correct implementation gives instead, where one applies: the alternative differs from the stored reference.
    A wrong result is explained only if it matches those outputs (`outputs_match`)."""
    for op, cond, text in KNOWN_EXPLANATIONS:
        if op != case.op_type:
            continue
        alt = _ALTERNATIVES[cond](case)
        if alt is not None and not outputs_match(alt, case.outputs, case.model):
            return text, alt
    return None


def explanation(case: FuzzCase) -> str | None:
    """The text of `explained_alternative`, or None."""
    found = explained_alternative(case)
    return found[0] if found else None


def outputs_match(outputs, expected: list[np.ndarray], model: onnx.ModelProto) -> bool:
    """Whether outputs match `expected` (same shapes, within each of the model's output types' tolerance)."""
    from opforge.verify.compare import compare

    for vi, o, r in zip(model.graph.output, outputs, expected):
        name = dtypes.from_onnx(vi.type.tensor_type.elem_type).name
        o = np.asarray(o)
        if o.shape != r.shape or not compare(o.astype(r.dtype), r, name).ok:
            return False
    return True


# --- CPU check (TVM llvm) --------------------------------------------------------------------------------------


_WORKER = None


def cpu_check(case: FuzzCase) -> dict:
    """The case's subgraph as opforge lowers it, run by TVM on the CPU (llvm), against the stored reference; in a
    worker process (TVM crashes on some generated nodes: that case is an "error" row, the caller goes on). A wrong
    case with a known explanation says whether its result is the explanation's (`cpu_explained`)."""
    from opforge.core.errors import LoweringError
    from opforge.plan.isolated import Worker

    global _WORKER
    _WORKER = _WORKER or Worker()
    found = explained_alternative(case)
    try:
        return _WORKER.call(case.name, _cpu_check_here, case.as_case(), found[1] if found else None)
    except LoweringError as e:
        return {"cpu_check": "error", "cpu_reason": str(e)}


def _cpu_check_here(case: Case, alternative: list[np.ndarray] | None = None) -> dict:
    """The check in this process; a wrong result says whether it matches the explanation's `alternative`."""
    from opforge.lower.cpu_run import run_on_cpu
    from opforge.verify.compare import compare

    sub, _ = conformance.case_subgraph(case)
    try:
        outs = run_on_cpu(sub, conformance._kept_inputs(case, sub))
    except Exception as e:
        return {"cpu_check": "error", "cpu_reason": f"{type(e).__name__}: {str(e)[:200]}"}
    worst, ok = 0.0, True
    for vi, o, r in zip(case.model.graph.output, outs, case.outputs):
        name = dtypes.from_onnx(vi.type.tensor_type.elem_type).name
        try:
            c = compare(np.asarray(o).astype(r.dtype) if o.shape == r.shape else o, r, name)
        except Exception as e:
            return {"cpu_check": "error", "cpu_reason": f"compare: {type(e).__name__}: {str(e)[:150]}"}
        ok &= c.ok
        worst = max(worst, c.max_abs)
    row = {"cpu_check": "pass" if ok else "wrong", "cpu_max_abs_err": worst}
    if not ok and alternative is not None:
        row["cpu_explained"] = outputs_match(outs, alternative, case.model)
    return row


def shrink(case: FuzzCase, still_fails) -> FuzzCase:
    """Greedy shrink over the input dims: each dim size tried at 1, 2 and half, kept where the case still fails
    (`still_fails(case) -> bool`); attributes and dtypes stay. Shape-like constants follow as in generation."""
    best = case
    sizes = sorted({d for x in case.inputs for d in x.shape if d > 2}, reverse=True)
    for d in sizes:
        for smaller in (1, 2, d // 2):
            trial = _resized(best, d, smaller)
            if trial is not None and still_fails(trial):
                best = trial
                break
    return best


def _resized(case: FuzzCase, old: int, new: int) -> FuzzCase | None:
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    for vi in m.graph.input:
        _set_shape(vi, [new if d == old else d for d in _shape_of(vi)])
    for vi in m.graph.output:
        vi.type.tensor_type.ClearField("shape")
    rng = np.random.default_rng([*case.seed, old, new])
    try:
        values, _ = _draw(m, rng, make_constant=False)
        feeds = {vi.name: v for vi, v in zip(m.graph.input, values)}
        outs, ref = reference_outputs(m, feeds)
        for vi, o in zip(m.graph.output, outs):
            _set_shape(vi, list(o.shape))
    except Exception:
        return None
    what = {**case.mutation, "shrunk": f"{old}->{new}"}
    return FuzzCase(case.name + f"_s{new}", case.op_type, case.seed, case.form, m, values, outs, what, ref)


# --- bundle ----------------------------------------------------------------------------------------------------


def save_case(bundle: Path, case: FuzzCase) -> None:
    """The case's model and record in BUNDLE/fuzz-cases/<name>.onnx / .case.json (its arrays are in
    BUNDLE/cases/<name>/data once built, or are drawn again from its seed)."""
    d = bundle / "fuzz-cases"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{case.name}.onnx").write_bytes(case.model.SerializeToString())
    if case.symbolic is not None:
        (d / f"{case.name}.symbolic.onnx").write_bytes(case.symbolic.SerializeToString())
    (d / f"{case.name}.case.json").write_text(json.dumps(case.record()))


def load_case(bundle: Path, name: str, first: str = "onnx", timeout_s: int = REFERENCE_TIMEOUT_S) -> FuzzCase:
    """A saved case: its built arrays where the bundle holds them, else inputs drawn again from the op's domain
    (seeded by the case's seed) and the reference run on them (`first`, ONNX's reference for up to `timeout_s`)."""
    d = bundle / "fuzz-cases"
    model = onnx.load_model_from_string((d / f"{name}.onnx").read_bytes())
    rec = json.loads((d / f"{name}.case.json").read_text())
    data_stem = bundle / "cases" / name / "data"
    if data_stem.with_suffix(".bin").is_file():
        data = conformance.load_arrays(data_stem)
        ins = [data[f"in{i}"] for i in range(len(model.graph.input))]
        outs = [data[f"out{i}"] for i in range(len(model.graph.output))]
        ref = rec["reference"]
    else:
        ins, _ = _draw(model, np.random.default_rng([*rec["seed"], 1]), make_constant=False)
        outs, ref = reference_outputs(model, {vi.name: v for vi, v in zip(model.graph.input, ins)}, first, timeout_s)
    sym_file = d / f"{name}.symbolic.onnx"
    sym = onnx.load_model_from_string(sym_file.read_bytes()) if sym_file.is_file() else None
    return FuzzCase(
        name,
        rec["op_type"],
        rec["seed"],
        rec["form"],
        model,
        ins,
        outs,
        rec["mutation"],
        ref,
        sym,
        rec.get("family", ""),
    )


def _case_bytes(case: FuzzCase) -> int:
    return sum(int(x.nbytes) for x in [*case.inputs, *case.outputs])


def build(bundle: Path, cases: list[FuzzCase], progress=None, config_for=None) -> list[dict]:
    """CPU side: save every case, then the conformance runner's build (lower, one plugin per distinct plan,
    PLUGINS_PER_LIBRARY per library, nvcc, case data) under BUNDLE/fuzz-build.json; `config_for` gives a subgraph's
    tuned schedule configuration (None: DLight's defaults, as `opforge generate` without tuning)."""
    for c in cases:
        save_case(bundle, c)
    rows = conformance.build(
        bundle,
        [c.as_case() for c in cases],
        progress,
        record=BUILD_RECORD,
        library_stem="fuzz",
        lower_timeout_s=LOWER_TIMEOUT_S,
        config_for=config_for,
    )
    by_name = {c.name: c for c in cases}
    for row in rows:
        c = by_name[row["case"]]
        row.update(c.record())
        found = explained_alternative(c)
        if found:
            row["explanation"] = found[0]
            if row.get("built"):  # what the plugin must match for the explanation to hold (checked on the GPU)
                _save_alternative(bundle, c.name, found[1])
        if row.get("built") and _case_bytes(c) > STORED_CASE_BYTES:
            # Large arrays are not carried: the GPU side draws the inputs again and runs the reference there.
            for stem in ("data", ALTERNATIVE):
                for suffix in (".bin", ".json"):
                    (bundle / "cases" / c.name / stem).with_suffix(suffix).unlink(missing_ok=True)
            row["data"] = "drawn on the run side"
    info = json.loads((bundle / BUILD_RECORD).read_text())
    info["rows"] = rows
    (bundle / BUILD_RECORD).write_text(json.dumps(info, indent=1))
    return rows


def _draw_on_run_side(job: tuple[str, str, str]) -> str:
    """One large case's inputs drawn again and its reference computed (the one that answered on the build machine,
    ONNX's unless it failed or ran over REFERENCE_TIMEOUT_S there: onnxruntime is fast but not always exact, its
    float32 DFT of length 100 is off by 6e-4 where ONNX's reference is off by 2e-6); its arrays saved. Returns the
    reference's name."""
    bundle, name, first = Path(job[0]), job[1], job[2]
    c = load_case(bundle, name, first=first, timeout_s=RUN_REFERENCE_TIMEOUT_S)
    sub, _ = conformance.case_subgraph(c.as_case())
    declared = [
        dtypes.numpy_dtype(dtypes.from_onnx(vi.type.tensor_type.elem_type).name)
        for vi in [*sub.model.graph.input, *sub.model.graph.output]
    ]
    (bundle / "cases" / c.name).mkdir(parents=True, exist_ok=True)
    conformance.save_arrays(
        bundle / "cases" / c.name / "data",
        {**{f"in{i}": a for i, a in enumerate(c.inputs)}, **{f"out{i}": a for i, a in enumerate(c.outputs)}},
        declared,
    )
    try:  # an alternative this machine cannot compute (no onnxruntime) leaves the case unexplained, not the run
        found = explained_alternative(c)
    except Exception:
        found = None
    if found:
        _save_alternative(bundle, c.name, found[1])
    return c.reference


def _draw_on_run_side_or_why(job: tuple[str, str, str]) -> tuple[str, str]:
    """(_draw_on_run_side's reference name, "") or ("", why it failed): one case's failure is that case's row."""
    try:
        return _draw_on_run_side(job), ""
    except Exception as e:
        return "", f"{type(e).__name__}: {str(e)[:280]}"


ALTERNATIVE = "alternative"  # BUNDLE/cases/<name>/alternative.{bin,json}: an explained case's alternative outputs


def _save_alternative(bundle: Path, name: str, outputs: list[np.ndarray]) -> None:
    conformance.save_arrays(bundle / "cases" / name / ALTERNATIVE, {f"out{i}": a for i, a in enumerate(outputs)})


def _verify_explanations(bundle: Path, rows: list[dict]) -> None:
    """For each wrong case with an explanation: its plugin run again (two poisons) against the explanation's
    alternative outputs; `explanation_verified` says whether it matches them (only then is the case explained)."""
    from opforge.build.package import HARNESS_PATH
    from opforge.verify.harness import Harness

    todo = [r for r in rows if r.get("class") == "wrong" and r.get("explanation")]
    if not todo:
        return
    harness, declared = Harness(bundle / HARNESS_PATH), {}
    for row in todo:
        stem = bundle / "cases" / row["case"] / ALTERNATIVE
        if not stem.with_suffix(".bin").is_file():
            row["explanation_verified"] = False
            continue
        try:
            case = conformance.load_built_case(bundle, row, harness, declared)
            alt = conformance.load_arrays(stem)
            expected = [alt[f"out{i}"] for i in range(len(case.expected))]
            row["explanation_verified"] = all(c.ok for c in conformance.compare_built(case, expected))
        except Exception as e:
            row["explanation_verified"] = False
            row["explanation_error"] = f"{type(e).__name__}: {str(e)[:200]}"


def run(bundle: Path, progress=None) -> list[dict]:
    """GPU side (no TVM): every built case through the harness against its reference, two poisons. Cases whose
    arrays were too large to carry get inputs drawn again from the op's domain and their reference computed here
    first, in a process per core (before CUDA starts)."""
    import multiprocessing
    import os

    info = json.loads((bundle / BUILD_RECORD).read_text())
    rows = [r for r in info["rows"] if r.get("built") and r.get("data")]
    jobs = [(str(bundle), r["case"], r.get("reference", "onnx")) for r in rows]
    if jobs:
        with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
            for r, (ref, error) in zip(rows, pool.map(_draw_on_run_side_or_why, jobs, chunksize=1)):
                if error:  # no reference to compare with: the case is not run (not the plugin's failure)
                    r.update({"built": False, "class": "no-reference", "reason": error})
                else:
                    r["reference"] = ref
    (bundle / BUILD_RECORD).write_text(json.dumps(info, indent=1))
    out = conformance.run(bundle, progress, record=BUILD_RECORD)
    _verify_explanations(bundle, out)
    return out
