"""The whole rewritten model on the user's data: plugin nodes through a plugin runner (the harness on the GPU), every
other node through onnxruntime, against onnxruntime on the original model, output by output; and the first node
whose output diverges from the original model's intermediate of the same name.

The executor walks the rewritten graph in its (topological) order and keeps every tensor in numpy. Runs of
consecutive ordinary nodes become one onnxruntime session each (a run that fails is retried node by node, so the
failing node is named). A plugin node goes to the `PluginRunner`, an injectable callable: `harness_runner` runs the
plugin through opforge's harness (TensorRT's IPluginV3 call sequence, GPU); `subgraph_runner` computes it with
onnxruntime on the plugin's original one-node subgraph (`plans/<key>.onnx`), which tests the machinery on a CPU.

The original model runs once with every intermediate tensor added as a graph output; the rewritten model keeps the
original's tensor names (plugin nodes keep their node's outputs), so every node output of the rewritten execution
has a reference, compared under opforge.core.tolerances.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from opforge.core import dtypes
from opforge.core.errors import OpforgeError, UsageError
from opforge.core.manifest import Manifest, PluginEntry
from opforge.verify.compare import Comparison, compare


@dataclass
class PluginCall:
    """One plugin node to compute: `inputs` in the node's input order (the plan's input order)."""

    node: onnx.NodeProto  # the plugin node of the rewritten model
    entry: PluginEntry
    out_dir: Path
    inputs: list[np.ndarray]


# (plugin call) -> the node's outputs, in its output order.
PluginRunner = Callable[[PluginCall], list[np.ndarray]]


@dataclass
class Execution:
    """The tensors one execution produced (graph inputs included) and the nodes that failed, with the reason."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # node name -> one-line reason
    source: str = "onnxruntime"


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:400]


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # No fusion: each node's output is computed as the node alone would compute it (and stays observable).
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------------- runners


def subgraph_runner(perturb: Callable[[PluginCall, list[np.ndarray]], list[np.ndarray]] | None = None) -> PluginRunner:
    """A CPU stand-in for the GPU: onnxruntime on the plugin's original one-node subgraph (the node as it was before
    the rewrite, constants folded in). `perturb(call, outputs)` may change the outputs (tests of divergence)."""
    sessions: dict[str, object] = {}

    def run(call: PluginCall) -> list[np.ndarray]:
        key = call.entry.subgraph
        if key not in sessions:
            sessions[key] = _session(onnx.load(str(call.out_dir / key)))
        sess = sessions[key]
        names = [i.name for i in sess.get_inputs()]
        outs = [np.asarray(o) for o in sess.run(None, dict(zip(names, call.inputs)))]
        return perturb(call, outs) if perturb else outs

    return run


def harness_runner(out_dir: Path, manifest: Manifest) -> PluginRunner:
    """The plugin through opforge's harness on the GPU: TensorRT's IPluginV3 call sequence, fields from the node's
    attributes as TensorRT's parser builds them (core.fields.parser_fields), outputs of the first execution context
    (poisoned first, so an unwritten element shows)."""
    from opforge.core.fields import parser_fields
    from opforge.core.kernel_plan import KernelPlan
    from opforge.verify.check import POISONS
    from opforge.verify.harness import Harness

    if not manifest.harness or not (out_dir / manifest.harness).is_file():
        raise OpforgeError(f"{out_dir}: the harness library {manifest.harness or '(none)'} is missing; re-run generate")
    try:
        harness = Harness(out_dir / manifest.harness)
    except OSError as e:
        raise OpforgeError(f"{out_dir / manifest.harness}: cannot be loaded ({str(e).splitlines()[0]})") from None
    plans: dict[str, KernelPlan] = {}
    declared: dict[str, list[tuple[str, str]]] = {}

    def run(call: PluginCall) -> list[np.ndarray]:
        entry = call.entry
        lib = call.out_dir / entry.library
        if entry.name not in plans:
            plans[entry.name] = KernelPlan.load(call.out_dir / entry.plan)
            declared[entry.name] = harness.declared_fields(lib, entry.name)
        fields = parser_fields(call.node, declared[entry.name])
        contexts = harness.run_plan(lib, entry.name, fields, plans[entry.name], call.inputs, POISONS[0])
        return contexts[0]

    return run


# ---------------------------------------------------------------------------------------------------- inputs


def find_input_model(out_dir: Path, manifest: Manifest) -> Path:
    """The original model: recorded relative to the output folder (survives moving both together), else at its
    absolute path; an OpforgeError in one line if neither exists."""
    tried = []
    if manifest.input_model_relative:
        tried.append(out_dir / manifest.input_model_relative)
    p = Path(manifest.input_model)
    tried.append(p if p.is_absolute() else out_dir / p)
    if not p.is_absolute():
        tried.append(p)  # older manifests: the path as given, relative to where generate ran
    for t in tried:
        if t.is_file():
            return Path(os.path.normpath(t))
    raise OpforgeError(
        f"the original model is missing (tried {', '.join(str(t) for t in dict.fromkeys(tried))}); give it with --model"
    )


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a user feeds: graph inputs that are not initializers."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _declared(vi: onnx.ValueInfoProto) -> tuple[str, list[int | str] | None]:
    tt = vi.type.tensor_type
    name = dtypes.from_onnx(tt.elem_type).name
    if not tt.HasField("shape"):
        return name, None
    return name, [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tt.shape.dim]


def load_inputs(path: Path, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """An .npz whose keys are the graph input names, checked against the model's declared dtypes and shapes."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise UsageError(f"--inputs {path}: not a readable .npz ({_one_line(e)})") from None
    expected = graph_inputs(model)
    names = [i.name for i in expected]
    missing = [n for n in names if n not in data]
    extra = [k for k in data if k not in names]
    if missing or extra:
        raise UsageError(
            f"--inputs {path}: keys must be the graph input names {names}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {extra}" if extra else "")
        )
    for vi in expected:
        dtype, shape = _declared(vi)
        arr = data[vi.name]
        if arr.dtype != dtypes.numpy_dtype(dtype):
            raise UsageError(f"--inputs {path}: {vi.name!r} is {arr.dtype}, the model takes {dtype}")
        bad = shape is not None and (
            len(shape) != arr.ndim or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(shape, arr.shape))
        )
        if bad:
            raise UsageError(f"--inputs {path}: {vi.name!r} has shape {list(arr.shape)}, the model takes {shape}")
    return data


def _dim_value(name: str, dims: dict[str, list[int]], manifest: Manifest | None) -> int:
    if name in dims:
        return dims[name][0]
    if name == "batch" and manifest is not None and manifest.dynamic_batch:
        return int(manifest.dynamic_batch["opt"])
    return 1


def random_inputs(
    model: onnx.ModelProto,
    rng: np.random.Generator,
    dims: dict[str, list[int]] | None = None,
    manifest: Manifest | None = None,
) -> dict[str, np.ndarray]:
    """Random values for each graph input; symbolic dimensions from `dims` (first value), else the dynamic-batch
    profile's opt for `batch`, else 1. Where a graph input feeds an op with an input domain in the op registry
    (indices of a Gather, boxes of a RoiAlign...), that op's domain is applied, with the shapes of the node's other
    inputs from ONNX shape inference (their values read as zeros); where that fails, the values stay random."""
    from opforge.ops import rule_for
    from opforge.ops.base import InputDomain
    from opforge.verify.inputs import random_tensor

    dims = dims or {}
    values: dict[str, np.ndarray] = {}
    ranges: dict[str, tuple[float, float]] = {}
    for node in model.graph.node:  # a float range an op wants (Log, Sqrt...) for the graph inputs it reads directly
        rule = rule_for(node)
        for name in node.input:
            if rule.value_range is not None:
                ranges.setdefault(name, rule.value_range)
    for vi in graph_inputs(model):
        dtype, shape = _declared(vi)
        if shape is None:
            raise UsageError(f"graph input {vi.name!r} has no declared shape: give the inputs with --inputs FILE.npz")
        concrete = tuple(d if isinstance(d, int) and d > 0 else _dim_value(str(d), dims, manifest) for d in shape)
        values[vi.name] = random_tensor(rng, concrete, dtype, ranges.get(vi.name))
    domain_nodes = [n for n in model.graph.node if rule_for(n).inputs is not None and set(n.input) & set(values)]
    if not domain_nodes:
        return values
    shapes = _inferred_shapes(model, values)
    for node in domain_nodes:
        mine = {n: values[n] for n in node.input if n in values}
        others = {}
        for name in node.input:
            if not name or name in mine:
                continue
            const = _initializer(model, name)
            if const is not None:
                others[name] = const
            elif name in shapes:
                elem, shape = shapes[name]
                others[name] = np.broadcast_to(np.zeros((), helper.tensor_dtype_to_np_dtype(elem)), shape)
        try:
            rule_for(node).inputs(InputDomain(node, mine, others, rng))
        except Exception:  # the domain needed more than shapes: keep the random values
            continue
        values.update(mine)
    return values


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None


def _inferred_shapes(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> dict[str, tuple[int, tuple[int, ...]]]:
    """name -> (elem type, concrete shape) of every tensor ONNX shape inference sizes, given the inputs' shapes."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name in values:
            tt = vi.type.tensor_type
            tt.ClearField("shape")
            for s in values[vi.name].shape:
                tt.shape.dim.add().dim_value = s
    try:
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:
        return {}
    out = {}
    for vi in [*m.graph.value_info, *m.graph.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            out[vi.name] = (tt.elem_type, tuple(d.dim_value for d in tt.shape.dim))
    return out


# ---------------------------------------------------------------------------------------------------- executions


def _elem_type(arr: np.ndarray) -> int:
    if arr.dtype == object or arr.dtype.kind in "US":
        return onnx.TensorProto.STRING
    return helper.np_dtype_to_tensor_dtype(arr.dtype)


def _referenced(node: onnx.NodeProto) -> set[str]:
    """Every tensor name a node reads, those its subgraphs (If, Loop, Scan) take from the outer scope included."""
    names = {i for i in node.input if i}
    for a in node.attribute:
        for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            for n in g.node:
                names |= _referenced(n)
    return names


def _run_nodes(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], env: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Ordinary nodes (consecutive in topological order) as one onnxruntime session: inputs are the tensors they read
    from `env`, outputs every tensor they produce."""
    produced = [o for n in nodes for o in n.output if o]
    inside = set(produced)
    reads = sorted({r for n in nodes for r in _referenced(n)} - inside)
    inits = {t.name: t for t in model.graph.initializer}
    feeds = {r: env[r] for r in reads if r in env and r not in inits}
    missing = [r for r in reads if r not in env and r not in inits and any(r in n.input for n in nodes)]
    if missing:
        raise OpforgeError(f"input {missing[0]!r} was not computed")
    graph = helper.make_graph(
        list(nodes),
        "opforge_run",
        [helper.make_tensor_value_info(k, _elem_type(v), v.shape) for k, v in feeds.items()],
        [onnx.ValueInfoProto(name=o) for o in produced],
        initializer=[inits[r] for r in reads if r in inits],
    )
    m = helper.make_model(graph, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    m.functions.extend(model.functions)
    outs = _session(m).run(produced, feeds)
    return {name: np.asarray(v) for name, v in zip(produced, outs)}


def run_rewritten(
    model: onnx.ModelProto, manifest: Manifest, out_dir: Path, feeds: dict[str, np.ndarray], runner: PluginRunner
) -> Execution:
    """The rewritten model node by node: plugin nodes through `runner`, runs of other nodes through onnxruntime.
    A node that fails (or whose input is missing) is recorded in `failed`, and the walk goes on."""
    plugins = {p.name: p for p in manifest.plugins}
    ex = Execution(values=dict(feeds), source="plugins + onnxruntime")
    inits = {t.name for t in model.graph.initializer}
    pending: list[onnx.NodeProto] = []

    def flush() -> None:
        if not pending:
            return
        try:
            ex.values.update(_run_nodes(model, pending, ex.values))
        except Exception:
            for n in pending:  # name the node at fault
                try:
                    ex.values.update(_run_nodes(model, [n], ex.values))
                except Exception as e:
                    ex.failed[n.name] = e.args[0] if isinstance(e, OpforgeError) else _one_line(e)
        pending.clear()

    for node in model.graph.node:
        entry = plugins.get(manifest.nodes.get(node.name, ""))
        if entry is None:
            pending.append(node)
            continue
        flush()
        missing = [i for i in node.input if i and i not in ex.values and i not in inits]
        if missing:
            ex.failed[node.name] = f"input {missing[0]!r} was not computed"
            continue
        try:
            outs = runner(PluginCall(node, entry, out_dir, [ex.values[i] for i in node.input if i]))
        except Exception as e:
            ex.failed[node.name] = f"plugin {entry.name}: {_one_line(e)}"
            continue
        ex.values.update({name: np.asarray(v) for name, v in zip(node.output, outs) if name})
    flush()
    return ex


def run_original(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[Execution, str | None]:
    """The original model with every node output added as a graph output (onnxruntime, else onnx's reference
    evaluator); if that fails, the graph outputs alone. Returns the execution and why intermediates are missing."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=o) for n in m.graph.node for o in n.output if o and o not in have)
    errors = []
    for candidate, note in ((m, None), (model, "the original model does not run with its intermediates as outputs")):
        names = [o.name for o in candidate.graph.output]
        try:
            outs = _session(candidate).run(names, feeds)
            return Execution({**feeds, **{k: np.asarray(v) for k, v in zip(names, outs)}}), note
        except Exception as e:
            errors.append(f"onnxruntime: {_one_line(e)}")
        try:
            from onnx.reference import ReferenceEvaluator

            outs = ReferenceEvaluator(candidate).run(names, feeds)
            values = {**feeds, **{k: np.asarray(v) for k, v in zip(names, outs)}}
            return Execution(values, source="onnx.reference"), note
        except Exception as e:
            errors.append(f"onnx.reference: {_one_line(e)}")
    ex = Execution(dict(feeds), source="none")
    ex.failed["<reference>"] = "; ".join(errors[:2])
    return ex, "the reference failed"


# ---------------------------------------------------------------------------------------------------- comparison


def _compare(out: np.ndarray, ref: np.ndarray) -> Comparison:
    try:
        dtype = dtypes.from_numpy(ref.dtype).name
    except KeyError:  # strings, float8...: exact
        same = out.shape == ref.shape and bool(np.array_equal(out, ref))
        return Comparison(same, 0.0 if same else float("inf"), 0.0, 0 if same else -1, int(ref.size))
    if out.dtype != ref.dtype:
        return Comparison(False, float("inf"), float("inf"), -1, int(ref.size))
    return compare(out, ref, dtype)


def _row(name: str, out: np.ndarray | None, ref: np.ndarray | None, why: str) -> dict:
    if ref is None or out is None:
        shape = list((ref if ref is not None else out).shape) if (ref is not None or out is not None) else None
        return {"name": name, "shape": shape, "ok": False, "error": why}
    c = _compare(out, ref)
    row = {"name": name, "shape": list(ref.shape), "dtype": str(ref.dtype), **c.as_dict()}
    if out.shape != ref.shape:
        row["error"] = f"shape {list(out.shape)}, reference {list(ref.shape)}"
    elif out.dtype != ref.dtype:
        row["error"] = f"dtype {out.dtype}, reference {ref.dtype}"
    return row


def compare_executions(model: onnx.ModelProto, manifest: Manifest, got: Execution, ref: Execution) -> dict:
    """Rows per graph output, the first node (in topological order) with an output out of tolerance or not
    computed, and the plugin nodes' own comparisons."""
    plugin_nodes = set(manifest.nodes)
    ref_error = ref.failed.get("<reference>")

    def why_missing(name: str, producer: onnx.NodeProto | None) -> str:
        if name not in ref.values:
            return f"reference failed: {ref_error}" if ref_error else "the reference did not compute it"
        if producer is not None and producer.name in got.failed:
            return f"node {producer.name!r} failed: {got.failed[producer.name]}"
        return "not computed (an upstream node failed)"

    producers = {o: n for n in model.graph.node for o in n.output if o}
    outputs = []
    for o in model.graph.output:
        out, r = got.values.get(o.name), ref.values.get(o.name)
        outputs.append(_row(o.name, out, r, why_missing(o.name, producers.get(o.name))))
    first, plugin_rows = None, []
    for node in model.graph.node:
        for name in node.output:
            if not name or (name not in ref.values and node.name not in got.failed):
                continue  # no reference for this intermediate: nothing to say about it
            row = _row(name, got.values.get(name), ref.values.get(name), why_missing(name, node))
            row = {"node": node.name, "op_type": node.op_type, "output": name, **row}
            del row["name"]
            if node.name in plugin_nodes:
                plugin_rows.append({**row, "plugin": manifest.nodes[node.name]})
            if first is None and not row["ok"]:
                first = row
    return {"outputs": outputs, "first_divergence": first, "plugin_nodes": plugin_rows}


# ---------------------------------------------------------------------------------------------------- the check


def verify_model(
    out_dir: Path,
    inputs: Path | dict[str, np.ndarray] | None = None,
    runner: PluginRunner | None = None,
    dims: dict[str, list[int]] | None = None,
    seed: int | None = None,
    original: Path | None = None,
) -> dict:
    """The whole rewritten model of an output folder against the original model, on `inputs` (an .npz path or
    arrays by graph input name) or, without them, random inputs drawn from `seed`. runner: how plugin nodes run
    (default: the harness, on the GPU). Returns the report: per graph output rows, the first diverging node, ok."""
    out_dir = Path(out_dir)
    manifest = Manifest.load(out_dir)
    if not manifest.plugins:
        raise OpforgeError(f"{out_dir}: no plugins in {out_dir / 'manifest.json'}, nothing to verify")
    rewritten_path = out_dir / manifest.output_model
    if not rewritten_path.is_file():
        raise OpforgeError(f"{rewritten_path}: the rewritten model is missing")
    original = Path(original) if original else find_input_model(out_dir, manifest)
    if not original.is_file():
        raise OpforgeError(f"{original}: the original model is missing")
    rewritten = onnx.load(str(rewritten_path))
    source = onnx.load(str(original))
    report: dict = {"folder": str(out_dir), "original_model": str(original), "rewritten_model": str(rewritten_path)}
    if isinstance(inputs, (str, os.PathLike)):
        feeds = load_inputs(Path(inputs), rewritten)
        report["inputs"] = str(inputs)
    elif inputs is not None:
        feeds = dict(inputs)
        report["inputs"] = "given arrays"
    else:
        seed = int(np.random.SeedSequence().entropy % (1 << 32)) if seed is None else seed
        feeds = random_inputs(source, np.random.default_rng(seed), dims, manifest)
        report["inputs"] = f"random (seed {seed})"
    report["input_shapes"] = {k: list(v.shape) for k, v in feeds.items()}
    runner = runner or harness_runner(out_dir, manifest)
    got = run_rewritten(rewritten, manifest, out_dir, feeds, runner)
    ref, note = run_original(source, feeds)
    report.update(compare_executions(rewritten, manifest, got, ref))
    report["reference"] = ref.source
    if note:
        report["note"] = note
    report["failed_nodes"] = got.failed
    report["ok"] = bool(report["outputs"]) and all(r["ok"] for r in report["outputs"])
    return report


def format_report(report: dict) -> str:
    """The report as text: one line per graph output, then the first diverging node."""
    lines = [
        f"whole model: {report['rewritten_model']} against {report['original_model']} ({report['reference']}), "
        f"inputs: {report['inputs']}",
        f"{'output':32s} {'shape':18s} {'max abs err':>12s} {'max rel err':>12s}  result",
    ]
    for r in report["outputs"]:
        status = "PASS" if r["ok"] else "FAIL"
        shape = "x".join(map(str, r["shape"])) if r.get("shape") is not None else "?"
        if "max_abs_err" in r:
            lines.append(f"{r['name']:32s} {shape:18s} {r['max_abs_err']:12.3g} {r['max_rel_err']:12.3g}  {status}")
        else:
            lines.append(f"{r['name']:32s} {shape:18s} {'-':>12s} {'-':>12s}  {status}")
        if r.get("error"):
            lines.append(f"    {r['error']}")
    d = report.get("first_divergence")
    if d is None:
        note = report.get("note")
        lines.append(f"first diverging node: unknown ({note})" if note else "no node diverges")
    else:
        err = (
            f"max abs err {d['max_abs_err']:.3g}, max rel err {d['max_rel_err']:.3g}, {d['bad']} of {d['elements']} "
            "elements out of tolerance"
            if "max_abs_err" in d and d.get("bad", -1) >= 0
            else d.get("error", "")
        )
        lines.append(f"first diverging node: {d['node']} ({d['op_type']}), output {d['output']}: {err}")
    lines.append("PASS" if report["ok"] else "FAIL")
    return "\n".join(lines)
