"""The ONNX conformance suite through opforge: each case of onnx.backend.test.case.node goes extract -> lower ->
plan -> emit -> nvcc on the CPU machine (one plugin per distinct plan, many plugins per library), then runs on the
GPU through the plugin harness (TensorRT's IPluginV3 call sequence) on the case's own inputs against its expected
outputs.

Every case ends in exactly one class:
  pass | wrong (max errors recorded) | lower-failed | build-failed | runtime-failed | ineligible.

Eligibility (the one place the rule lives, `ineligible_reason`): every graph input and output is a tensor (no
sequence, optional or map) of a dtype a TensorRT tensor can hold (opforge.core.dtypes: no strings, no float64, no
16/32/64-bit unsigned or int16, no sub-byte or fp8 types), and no node draws random numbers (RandomNormal,
RandomUniform(Like), Bernoulli, Multinomial, Dropout in training mode): a recorded expected output of a random op
cannot be compared.

Shape-like inputs (axes, shape, pads, repeats, sizes, scales, depth, k, ... by the op schema's input names) that the
case passes as runtime tensors are baked in as constants, as they are in real models where they come from
initializers; so are small integer inputs that flow through other ops into such an input and decide an output's shape
(expanded function bodies: shape inference leaves fewer output dimensions unknown once the value is known); each
row lists what was baked. Multi-node cases (function expansions) become one fused plan.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from opforge.core import dtypes
from opforge.core.errors import OpforgeError
from opforge.extract.model_io import opset_of
from opforge.extract.subgraph import NodeSubgraph

CLASSES = ("pass", "wrong", "lower-failed", "build-failed", "runtime-failed", "ineligible")

# ONNX schema input names whose values decide shapes, so TensorRT (and TVM) need them at build time.
SHAPE_LIKE_INPUTS = {
    "shape",
    "axes",
    "axis",
    "pads",
    "repeats",
    "starts",
    "ends",
    "steps",
    "sizes",
    "scales",
    "roi",
    "depth",
    "k",
    "K",
    "split",
    "output_shape",
    "input_shape",
    "block_shape",
    "kernel_shape",
    "start",
    "limit",
    "delta",
    "num_outputs",
    "image_shape",
    "output_size",
    "noop_with_empty_axes",
    "max_output_boxes_per_class",
    "size",  # the window ops' length, AffineGrid's output size
    "frame_step",
    "frame_length",
    "dft_length",
}
# Schema input names that hide a shape: ConstantOfShape's "input" is the output's shape.
_ROLE_OF = {("ConstantOfShape", "input"): "shape"}
# Float inputs that decide an output shape: Resize's scales and roi, OneHot's depth, Range's bounds.
_FLOAT_SHAPE_LIKE = {"scales", "roi", "depth", "start", "limit", "delta"}
_MAX_BAKED_ELEMENTS = 64


@dataclass
class Case:
    name: str
    op_type: str
    model: onnx.ModelProto
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    # Where `model` has symbolic dims (one plugin for several shapes), the same node with this case's static
    # shapes: lowered instead when the symbolic model does not lower.
    static_model: onnx.ModelProto | None = None


def load_cases(names: set[str] | None = None) -> list[Case]:
    import warnings

    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = node_cases.collect_testcases(None)
    cases = []
    for c in raw:
        if names is not None and c.name not in names:
            continue
        op = c.model.graph.node[-1].op_type if c.model.graph.node else "?"
        for data in c.data_sets or [([], [])]:
            cases.append(Case(c.name, op, c.model, [_array(x) for x in data[0]], [_array(x) for x in data[1]]))
            break  # the first data set of each case
    return cases


def _array(x):
    """Tensors as arrays; sequences and optionals stay as they are (their cases are ineligible)."""
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    return x if isinstance(x, np.ndarray) else x if isinstance(x, (list, tuple)) or x is None else np.asarray(x)


def ci_slice(cases: list[Case], per_op: int = 1) -> list[Case]:
    """A fixed, representative slice: the first `per_op` cases (by name) of every op type."""
    seen: dict[str, int] = {}
    out = []
    for c in sorted(cases, key=lambda c: c.name):
        if seen.get(c.op_type, 0) < per_op:
            seen[c.op_type] = seen.get(c.op_type, 0) + 1
            out.append(c)
    return out


_RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial"}


def ineligible_reason(model: onnx.ModelProto) -> str | None:
    for n in model.graph.node:
        if n.op_type in _RANDOM_OPS or (n.op_type == "Dropout" and len(n.input) >= 3 and n.input[2]):
            return f"{n.op_type} draws random numbers"
    for vi in [*model.graph.input, *model.graph.output]:
        t = vi.type
        if not t.HasField("tensor_type"):
            return f"{vi.name} is a {t.WhichOneof('value')}, not a tensor"
        elem = t.tensor_type.elem_type
        try:
            d = dtypes.from_onnx(elem)
        except KeyError:
            return f"{vi.name} has ONNX type {onnx.TensorProto.DataType.Name(elem)}"
        if d.trt is None:
            return f"{vi.name} has dtype {d.name}, which a TensorRT tensor cannot hold"
    return None


def case_subgraph(case: Case) -> tuple[NodeSubgraph, list[str]]:
    """The case as a plan input: shape-like runtime inputs baked into initializers."""
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in m.graph.node:
        for pos, i in enumerate(n.input):
            consumers.setdefault(i, []).append((n, pos))
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 18)
    baked, keep = [], []
    for vi, value in zip(list(m.graph.input), case.inputs):
        roles = {_input_name(n, pos, opset) for n, pos in consumers.get(vi.name, [])}
        shape_like = (
            bool(roles)
            and roles <= SHAPE_LIKE_INPUTS
            and (value.dtype.kind in "iu" or roles <= _FLOAT_SHAPE_LIKE)
            and value.size <= _MAX_BAKED_ELEMENTS
        )
        if shape_like:
            m.graph.initializer.append(numpy_helper.from_array(value, vi.name))
            baked.append(vi.name)
        else:
            keep.append(vi)
    by_name = {vi.name: value for vi, value in zip(case.model.graph.input, case.inputs)}
    for vi in list(keep):
        value = by_name[vi.name]
        if (
            value.dtype.kind in "iu"
            and value.size <= _MAX_BAKED_ELEMENTS
            and _reaches_shape_argument(m, vi.name, opset)
            and _value_decides_shapes(m, vi.name, value)
        ):
            m.graph.initializer.append(numpy_helper.from_array(value, vi.name))
            baked.append(vi.name)
            keep.remove(vi)
    del m.graph.input[:]
    m.graph.input.extend(keep)
    names = [vi.name for vi in keep]
    sub = NodeSubgraph(case.name, case.op_type, m, names, {}, [o.name for o in m.graph.output])
    return sub, baked


def _unknown_output_dims(m: onnx.ModelProto) -> int:
    """How many dimensions of the graph outputs shape inference leaves unknown, after constant folding (the
    outputs' declared shapes set aside)."""
    from opforge.extract.fold import fold_graph, infer_types

    trial = onnx.ModelProto()
    trial.CopyFrom(m)
    for out in trial.graph.output:
        out.type.tensor_type.ClearField("shape")
    try:
        types = infer_types(fold_graph(trial))
    except Exception:
        return 1 << 30
    unknown = 0
    for out in trial.graph.output:
        t = types.get(out.name)
        if t is None or not t.tensor_type.HasField("shape"):
            unknown += 1 << 10
            continue
        unknown += sum(not d.HasField("dim_value") for d in t.tensor_type.shape.dim)
    return unknown


def _reaches_shape_argument(m: onnx.ModelProto, name: str, opset: int) -> bool:
    """Whether tensor `name` flows, through any ops, into a shape-like input of a node (by the schema's input
    names): a value that ends in a Range bound or a Slice end, not data an op such as NonZero measures."""
    frontier, seen = [name], {name}
    while frontier:
        tensor = frontier.pop()
        for n in m.graph.node:
            for pos, i in enumerate(n.input):
                if i != tensor:
                    continue
                if _input_name(n, pos, opset) in SHAPE_LIKE_INPUTS:
                    return True
                for o in n.output:
                    if o and o not in seen:
                        seen.add(o)
                        frontier.append(o)
    return False


def _value_decides_shapes(m: onnx.ModelProto, name: str, value: np.ndarray) -> bool:
    """Whether an output's shape depends on the value of graph input `name` (an integer input reaching a shape
    through other ops, as in expanded function bodies): fewer output dimensions are unknown once it is a
    constant."""
    before = _unknown_output_dims(m)
    if before == 0:
        return False
    trial = onnx.ModelProto()
    trial.CopyFrom(m)
    kept = [vi for vi in trial.graph.input if vi.name != name]
    del trial.graph.input[:]
    trial.graph.input.extend(kept)
    trial.graph.initializer.append(numpy_helper.from_array(value, name))
    return _unknown_output_dims(trial) < before


def _input_name(node: onnx.NodeProto, pos: int, opset: int) -> str:
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:
        return ""
    name = schema.inputs[min(pos, len(schema.inputs) - 1)].name if schema.inputs else ""
    return _ROLE_OF.get((node.op_type, name), name)


PLUGINS_PER_LIBRARY = 48


BUILD_RECORD = "conformance-build.json"
# A case still running after this long is runtime-failed (its worker killed): a plugin that hangs the GPU.
CASE_TIMEOUT_S = 300.0


def build(
    bundle: Path,
    cases: list[Case],
    progress=None,
    record: str = BUILD_RECORD,
    library_stem: str = "conformance",
    lower_timeout_s: float = 180.0,
    config_for=None,
    plan_hook=None,
) -> list[dict]:
    """CPU side: classify and lower every case, emit one plugin per distinct plan, compile them into plugin
    libraries of PLUGINS_PER_LIBRARY plugins each, build the harness; write the bundle the GPU side runs
    (`record`: the build record's file name in the bundle; `library_stem`: libopforge_<stem>_NN.so;
    `config_for`: a subgraph's tuned schedule configuration, None or absent: DLight's defaults; `plan_hook`:
    plan_hook(case name, KernelPlan) -> KernelPlan, a change made to each case's plan before it is packaged, for
    fault injection in scripts/check_isolation.py)."""

    say = progress or (lambda _msg: None)
    bundle.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    subs: list[tuple[dict, NodeSubgraph]] = []
    t0 = time.perf_counter()
    for case in cases:
        row = {"case": case.name, "op_type": case.op_type, "nodes": len(case.model.graph.node)}
        rows.append(row)
        reason = ineligible_reason(case.model)
        if reason:
            row.update({"class": "ineligible", "reason": reason})
            continue
        sub, baked = case_subgraph(case)
        row["baked_inputs"] = baked
        subs.append((row, sub))
    say(f"{len(subs)} of {len(cases)} cases eligible")
    from opforge.lower.tvm_lower import lower_subgraph  # noqa: F401  (fail early without TVM)
    from opforge.plan.isolated import IsolatedPlanner

    by_name = {c.name: c for c in cases}
    planned: dict[str, tuple[dict, NodeSubgraph, object]] = {}
    planner, failed = IsolatedPlanner(lower_timeout_s), {}
    for k, (row, sub) in enumerate(subs):
        case = by_name[row["case"]]
        try:
            p = _plan(sub, bundle, planner, failed, config_for)
        except _LowerFailed as e:
            if case.static_model is None or "took over" in str(e):  # a symbolic node that timed out: no retries
                row.update({"class": "lower-failed", "reason": str(e)})
            else:  # the symbolic form did not lower: this case gets a plugin of its own static shapes
                row["shapes"] = f"static (symbolic: {str(e)[:200]})"
                sub, _ = case_subgraph(Case(case.name, case.op_type, case.static_model, case.inputs, case.outputs))
                try:
                    p = _plan(sub, bundle, planner, failed, config_for)
                except _LowerFailed as e2:
                    row.update({"class": "lower-failed", "reason": str(e2)})
        else:
            if case.static_model is not None:
                row["shapes"] = "symbolic"
        if "class" not in row:
            if plan_hook is not None:
                p.plan = plan_hook(row["case"], p.plan)
            planned[row["case"]] = (row, sub, p)
        if k % 100 == 0:
            say(f"{k}/{len(subs)} eligible cases lowered ({time.perf_counter() - t0:.0f}s)")
    planner.close()

    specs = _plugin_specs(planned, by_name)
    say(f"{len(planned)} cases planned: {len(specs)} distinct plugins; compiling")
    from opforge.build.package import LibraryGroup, package

    good = list(specs.values())
    groups = [
        LibraryGroup(f"libopforge_{library_stem}_{k // PLUGINS_PER_LIBRARY:02d}.so", [s.plugin for s in batch])
        for k in range(0, len(good), PLUGINS_PER_LIBRARY)
        for batch in [good[k : k + PLUGINS_PER_LIBRARY]]
    ]
    t1 = time.perf_counter()
    built = package(groups, bundle, isolate=True, lib_subdir="lib")
    failed = built.failed
    for s in good:
        s.library = built.library_of(s.name) or ""
    say(f"{len(built.libraries)} libraries built in {time.perf_counter() - t1:.0f}s ({len(failed)} plugins failed)")

    case_dir = bundle / "cases"
    case_dir.mkdir(exist_ok=True)
    for row, sub, p in planned.values():
        spec = specs[p.plan.key]
        if spec.name in failed:
            row.update({"class": "build-failed", "reason": failed[spec.name][:300]})
            continue
        d = case_dir / row["case"]
        d.mkdir(exist_ok=True)
        case = by_name[row["case"]]
        try:
            declared = [
                dtypes.numpy_dtype(dtypes.from_onnx(vi.type.tensor_type.elem_type).name)
                for vi in [*sub.model.graph.input, *sub.model.graph.output]
            ]
            save_arrays(
                d / "data",
                {
                    **{f"in{i}": a for i, a in enumerate(_kept_inputs(case, sub))},
                    **{f"out{i}": a for i, a in enumerate(case.outputs)},
                },
                declared,
            )
        except (TypeError, ValueError, KeyError) as e:
            row.update({"class": "build-failed", "reason": f"case data: {type(e).__name__}: {str(e)[:200]}"})
            continue
        p.plan.save(d / "plan.json")
        (d / "plugin_node.onnx").write_bytes(_plugin_node(spec).SerializeToString())
        row.update({"plan_key": p.plan.key, "plugin": spec.name, "library": spec.library, "built": True})
    info = {"cases": len(cases), "build_s": round(time.perf_counter() - t0, 1), "rows": rows}
    (bundle / record).write_text(json.dumps(info, indent=1))
    return rows


class _LowerFailed(Exception):
    """A case's lowering failed; the message is the row's reason."""


def _plan(sub: NodeSubgraph, bundle: Path, planner, failed: dict[str, str], config_for=None):
    """The case's plan, or _LowerFailed with a one-line reason (a TVM crash is a lowering failure too; `planner`,
    an IsolatedPlanner, lowers in a worker process; `failed` remembers the subgraphs that failed, by key, so a
    family's shared symbolic node is tried once)."""
    if sub.key in failed:
        raise _LowerFailed(failed[sub.key])
    try:
        return planner.plan(sub, bundle / "plans_tmp", config_for(sub) if config_for else None)
    except OpforgeError as e:
        failed[sub.key] = str(e).split(": ", 1)[-1][:300]
    except Exception as e:
        failed[sub.key] = f"{type(e).__name__}: {str(e)[:280]}"
    raise _LowerFailed(failed[sub.key])


@dataclass
class _Spec:
    name: str
    plugin: object  # opforge.emit.plugin_cpp.PluginSpec
    library: str = ""


def _plugin_specs(planned: dict, by_name: dict[str, Case]) -> dict[str, _Spec]:
    """One plugin per distinct plan; a one-node case's plugin carries the node's attributes as its fields."""
    from opforge.core.fields import plugin_attrs
    from opforge.emit.plugin_cpp import PluginSpec

    specs: dict[str, _Spec] = {}
    for row, _sub, p in planned.values():
        key = p.plan.key
        if key in specs:
            specs[key].plugin.nodes.append(row["case"])
            continue
        model = by_name[row["case"]].model
        attrs = []
        if len(model.graph.node) == 1:
            try:
                attrs = plugin_attrs(model.graph.node[0], {}, opset_of(model))
            except ValueError:
                attrs = []  # graph attributes (If, Loop): the plugin is specialised and carries no fields
        name = f"{re.sub(r'[^0-9A-Za-z]', '', row['op_type'])}_opf{key[:8]}"
        specs[key] = _Spec(name, PluginSpec(name, p.plan, attrs, [row["case"]]))
    return specs


def _plugin_node(spec: _Spec) -> onnx.NodeProto:
    """The node TensorRT's parser would see in the rewritten model (its attributes become the plugin's fields)."""
    from onnx import helper

    node = helper.make_node(spec.name, [], [], name=spec.name, domain="opforge")
    node.attribute.extend(a.onnx_attribute() for a in spec.plugin.attrs)
    return node


def save_arrays(stem: Path, arrays: dict[str, np.ndarray], declared: list | None = None) -> None:
    """Raw bytes plus a JSON index of dtype names and shapes: np.savez cannot hold bfloat16 without pickling.
    `declared` (in the order of `arrays`) converts data the suite keeps in object arrays to the model's dtypes."""
    index, blobs, offset = {}, [], 0
    for k, (name, a) in enumerate(arrays.items()):
        a = np.asarray(a) if declared is None else np.asarray(a).astype(declared[k])
        a = np.array(a, order="C", copy=True)  # not ascontiguousarray: it turns 0-d scalars into shape (1,)
        index[name] = {
            "dtype": dtypes.from_numpy(a.dtype).name,
            "shape": list(a.shape),
            "offset": offset,
            "nbytes": a.nbytes,
        }
        blobs.append(a.tobytes())
        offset += a.nbytes
    stem.with_suffix(".bin").write_bytes(b"".join(blobs))
    stem.with_suffix(".json").write_text(json.dumps(index))


def load_arrays(stem: Path) -> dict[str, np.ndarray]:
    raw = stem.with_suffix(".bin").read_bytes()
    out = {}
    for name, e in json.loads(stem.with_suffix(".json").read_text()).items():
        buf = raw[e["offset"] : e["offset"] + e["nbytes"]]
        out[name] = np.frombuffer(buf, dtype=dtypes.numpy_dtype(e["dtype"])).reshape(e["shape"]).copy()
    return out


def _kept_inputs(case: Case, sub: NodeSubgraph) -> list[np.ndarray]:
    by_name = {vi.name: a for vi, a in zip(case.model.graph.input, case.inputs)}
    return [by_name[n] for n in sub.input_names]


@dataclass
class BuiltCase:
    """A built case ready for the harness: call(poison, execute) runs its plugin in two contexts."""

    plan: object  # KernelPlan
    fields: list
    expected: list[np.ndarray]
    call: Callable[[int, bool], list[list[np.ndarray]]]


def load_built_case(bundle: Path, row: dict, harness, declared: dict) -> BuiltCase:
    """Plan, case data and plugin fields of a built row; `declared` caches the creators' field lists."""
    from opforge.core.fields import parser_fields
    from opforge.core.kernel_plan import KernelPlan

    d = bundle / "cases" / row["case"]
    lib = bundle / row["library"]
    plan = KernelPlan.load(d / "plan.json")
    data = load_arrays(d / "data")
    inputs = [data[f"in{i}"] for i in range(len(plan.inputs))]
    expected = [data[f"out{i}"] for i in range(plan.nb_onnx_outputs)]
    node = onnx.NodeProto.FromString((d / "plugin_node.onnx").read_bytes())
    key = (row["library"], row["plugin"])
    if key not in declared:
        declared[key] = harness.declared_fields(lib, row["plugin"])
    fields = parser_fields(node, declared[key])

    def call(poison: int, execute: bool = True) -> list[list[np.ndarray]]:
        return harness.run_plan(lib, row["plugin"], fields, plan, inputs, poison, execute)

    return BuiltCase(plan, fields, expected, call)


def compare_built(case: BuiltCase, expected: list[np.ndarray]) -> list:
    """The built case's plugin run under each output poison, both execution contexts, compared with `expected`."""
    from opforge.verify.check import POISONS
    from opforge.verify.compare import compare_contexts

    return [c for poison in POISONS for c in compare_contexts(case.plan.outputs, case.call(poison), expected)]


def run(
    bundle: Path,
    progress=None,
    record: str = BUILD_RECORD,
    timeout_s: float = CASE_TIMEOUT_S,
    isolate: bool = True,
) -> list[dict]:
    """GPU side: every built case's plugin through the harness (TensorRT's IPluginV3 call sequence, two
    execution contexts), on the case's own inputs, against its expected outputs, under two output poisons. Cases
    run in worker processes (opforge.runtime.isolated; this process must not have started CUDA): one that faults,
    crashes or runs past `timeout_s` seconds is runtime-failed alone. `isolate=False` runs them in this process,
    where a fault fails every later case too."""
    from opforge.build.package import HARNESS_PATH
    from opforge.runtime.isolated import run_isolated
    from opforge.verify.harness import Harness

    info = json.loads((bundle / record).read_text())
    rows = info["rows"]
    built = [row for row in rows if row.get("built")]

    def setup():
        return Harness(bundle / HARNESS_PATH), {}

    def work(state, row: dict) -> dict:
        harness, declared = state
        case = load_built_case(bundle, row, harness, declared)
        results = compare_built(case, case.expected)
        return {
            "class": "pass" if all(c.ok for c in results) else "wrong",
            "max_abs_err": max((c.max_abs for c in results), default=0.0),
            "max_rel_err": max((c.max_rel for c in results), default=0.0),
        }

    def fault(_row: dict, reason: str) -> dict:
        return {"class": "runtime-failed", "reason": reason}

    def record_result(row: dict, update: dict) -> None:
        row.update(update)
        if progress:
            progress(row)

    run_isolated(built, setup, work, fault, timeout_s=timeout_s, progress=record_result, in_process=not isolate)
    return rows
