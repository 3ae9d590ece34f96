"""`opforge generate`: ONNX model + node selection -> plugin library, rewritten model, sources and manifest.

Everything is produced in a staging folder inside the output folder and moved into place at the end, so an
interrupted or failed run leaves the output folder as it was; opforge replaces only files it wrote itself
(opforge.core.outdir). The input model is never written.
"""

from __future__ import annotations

import os
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import onnx

from opforge import __version__
from opforge.build.nvcc import find_nvcc, gencode_flags
from opforge.build.trt_builtin_plugins import is_trt_builtin_plugin
from opforge.core.cache import writable_cache_dir
from opforge.core.errors import OpforgeError, UsageError
from opforge.core.fields import group_attrs, plugin_attrs
from opforge.core.fsutil import atomic_write_bytes
from opforge.core.manifest import MANIFEST_FILE, Manifest, PluginEntry
from opforge.core.outdir import OutputFolder
from opforge.emit.onnx_rewrite import Replacement, rewrite_model
from opforge.emit.plugin_cpp import PluginSpec
from opforge.extract import load_model, select_nodes
from opforge.extract.groups import fusion_groups
from opforge.extract.model_io import opset_of
from opforge.extract.select import check_unique_names
from opforge.extract.subgraph import Dim, check_dtypes, check_input_shapes, extract_groups
from opforge.lower.target import CudaTarget
from opforge.tune.records import TuningRecords

LIBRARY_NAME = "libopforge_plugins.so"
_PLUGIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class DynamicBatch:
    min: int = 1
    opt: int = 128
    max: int = 256

    @classmethod
    def parse(cls, text: str) -> DynamicBatch:
        try:
            lo, opt, hi = (int(x) for x in text.split(","))
        except ValueError:
            raise UsageError(f"--dynamic-batch {text!r}: expected MIN,OPT,MAX, e.g. 1,128,256") from None
        if not 1 <= lo <= opt <= hi:
            raise UsageError(f"--dynamic-batch {text!r}: need 1 <= MIN <= OPT <= MAX")
        return cls(lo, opt, hi)


@dataclass
class GenerateResult:
    out_dir: Path
    model: Path
    libraries: list[Path]
    manifest: Path
    plugins: list[PluginSpec]


def _tuned_configs(target: CudaTarget, records: TuningRecords | None):
    """The fastest correct schedule `opforge tune` recorded for a subgraph, else DLight's defaults."""
    from opforge.tune.records import workload_key

    records = records or TuningRecords.default()
    return lambda sub: records.config_for(workload_key(sub.key, target.arch))


def default_plugin_name(op_type: str, key: str) -> str:
    """<op>_opf<key prefix>; a fused group's op types joined by '_' (the first and the count past three)."""
    ops = op_type.split("+")
    stem = "_".join(ops) if len(ops) <= 3 else f"{ops[0]}_x{len(ops)}"
    return f"{re.sub(r'[^0-9A-Za-z_]', '', stem)}_opf{key[:8]}"


def check_plugin_name(name: str, node: str) -> None:
    if not _PLUGIN_NAME.match(name):
        raise UsageError(f"plugin name {name!r} for node {node!r} is not a C identifier")
    if is_trt_builtin_plugin(name):
        raise UsageError(
            f"plugin name {name!r} for node {node!r} is a TensorRT built-in plugin (libnvinfer_plugin): loading the "
            "library would clash with it; choose another name"
        )
    if onnx.defs.has(name):
        raise UsageError(
            f"plugin name {name!r} for node {node!r} is an ONNX op type: TensorRT's parser would import the node as "
            "that op, not as the plugin"
        )


def generate(
    model_path: str | Path,
    out_dir: str | Path,
    node_names: list[str] | None = None,
    node_types: list[str] | None = None,
    plugin_name_dict: dict[str, str] | None = None,
    input_shapes: dict[str, list[Dim]] | None = None,
    dynamic_batch: DynamicBatch | None = None,
    library_per_plugin: bool = False,
    target: CudaTarget | None = None,
    output_name: str | None = None,
    progress=None,
    tuning_records: TuningRecords | None = None,
    force: bool = False,
    folder: OutputFolder | None = None,
    model: onnx.ModelProto | None = None,
    extra_files: dict[str, bytes] | None = None,
    fuse: bool = True,
) -> GenerateResult:
    """Plugins for the selected nodes of model_path, written into out_dir (see opforge.core.outdir for what opforge
    may write there). Every check a user's input can fail runs before lowering. `folder`: an output folder the
    caller already opened (auto), committed here; `model`: the model already loaded (with node names given);
    `extra_files`: more files of the run (relative path -> bytes), e.g. the example model. With `fuse`, selected nodes
    that feed each other become one plugin (opforge.extract.groups); nodes given a plugin name stay single."""
    target = target or CudaTarget()
    model_path = Path(model_path)
    out_dir = Path(out_dir)
    say = progress or (lambda msg: None)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output {out_dir} is a file; give a folder (the input model is never overwritten)")
    out_model_name = output_name or f"{model_path.stem}.opforge.onnx"
    if model_path.resolve() in (out_dir.resolve(), (out_dir / out_model_name).resolve()):
        raise UsageError(f"output {out_dir / out_model_name} would overwrite the input model {model_path}")
    find_nvcc()  # fail before the slow steps when there is no compiler
    model = model if model is not None else load_model(model_path)
    check_unique_names(model)
    check_input_shapes(model, input_shapes)
    nodes = select_nodes(model, node_names, node_types, plugin_name_dict)
    for node_name, plugin in (plugin_name_dict or {}).items():
        check_plugin_name(plugin, node_name)
    named = set(plugin_name_dict or {})
    if fuse:
        groups = fusion_groups(model, [n for n in nodes if n.name not in named]) + [
            [n] for n in nodes if n.name in named
        ]
    else:
        groups = [[n] for n in nodes]
    fused = sum(len(g) for g in groups if len(g) > 1)
    say(
        f"extracting {len(nodes)} node(s)"
        + (f" ({fused} fused into {sum(len(g) > 1 for g in groups)})" if fused else "")
    )
    subs = extract_groups(model, groups, input_shapes, dynamic_batch is not None)
    check_dtypes(subs)
    writable_cache_dir()
    if folder is None:
        from opforge.build.package import HARNESS_PATH

        libs = [] if library_per_plugin else [LIBRARY_NAME]
        expect = [out_model_name, *libs, HARNESS_PATH, *(extra_files or {})]
        opened = OutputFolder(out_dir, model_path, force, say, expect)
    else:
        opened = nullcontext(folder)  # the caller's (auto) opened folder: it is committed here, closed there
    with opened as into:
        return _generate_into(
            into,
            model,
            model_path,
            groups,
            subs,
            plugin_name_dict,
            dynamic_batch,
            library_per_plugin,
            target,
            out_model_name,
            say,
            tuning_records,
            extra_files,
        )


def _generate_into(
    folder: OutputFolder,
    model: onnx.ModelProto,
    model_path: Path,
    groups: list[list[onnx.NodeProto]],
    subs: list,
    plugin_name_dict: dict[str, str] | None,
    dynamic_batch: DynamicBatch | None,
    library_per_plugin: bool,
    target: CudaTarget,
    out_model_name: str,
    say,
    tuning_records: TuningRecords | None,
    extra_files: dict[str, bytes] | None = None,
) -> GenerateResult:
    """Lower, emit and build into folder.staging, then commit the folder."""
    from opforge.build.package import LibraryGroup, build_fatbins, package
    from opforge.plan.planner import plan_subgraphs

    staging, out_dir = folder.staging, folder.path
    distinct = len({s.key for s in subs})
    counter = iter(range(1, distinct + 1))

    def lowering(sub) -> None:
        say(f"[{next(counter)}/{distinct}] lowering node {sub.node_name} ({sub.op_type})")

    planned = plan_subgraphs(
        subs, staging, target, config_for=_tuned_configs(target, tuning_records), before_lowering=lowering
    )
    opset = opset_of(model)
    specs: dict[str, PluginSpec] = {}
    replacements = []
    node_plugin = {}
    for group, sub, p in zip(groups, subs, planned):
        node = group[0]
        name = (plugin_name_dict or {}).get(node.name) or default_plugin_name(sub.op_type, p.plan.key)
        check_plugin_name(name, node.name)
        if sub.members:
            attrs = group_attrs(sub.members, sub.member_constants, opset)
        else:
            attrs = plugin_attrs(node, sub.constant_inputs, opset)
        if name in specs:
            if specs[name].plan.key != p.plan.key:
                raise UsageError(
                    f"plugin name {name!r} is given to nodes that differ (op, attributes, "
                    f"constants or shapes): {specs[name].nodes[0]!r} and {node.name!r}"
                )
            specs[name].nodes.append(node.name)
        else:
            specs[name] = PluginSpec(name, p.plan, attrs, [node.name])
        # A size tensor is a plugin output too: TensorRT's ONNX parser wants one node output per plugin output.
        sizes = [f"{o.name}__{node.name}" for o in p.plan.outputs[p.plan.nb_onnx_outputs :]]
        replacements.append(Replacement(name, sub.node_names, sub.input_names, [*sub.output_names, *sizes], attrs))
        node_plugin.update(dict.fromkeys(sub.node_names, name))

    say(f"compiling {len(specs)} kernel fatbin(s) with nvcc")
    build_fatbins(staging / "plans", [s.plan.key for s in specs.values()], target.arch)
    if library_per_plugin:
        groups = [LibraryGroup(f"lib{s.name}.so", [s]) for s in specs.values()]
    else:
        groups = [LibraryGroup(LIBRARY_NAME, list(specs.values()))]
    say(
        f"building {len(groups)} plugin librar{'y' if len(groups) == 1 else 'ies'} ({len(specs)} plugin(s)) "
        "and the harness"
    )
    built = package(groups, staging, target.arch, keep_sources=True)
    libraries = built.libraries

    rewritten = rewrite_model(model, replacements)
    try:
        onnx.checker.check_model(rewritten)
    except onnx.checker.ValidationError as e:
        raise OpforgeError(f"the rewritten model fails onnx.checker: {str(e).splitlines()[0]}") from None
    atomic_write_bytes(staging / out_model_name, rewritten.SerializeToString())
    for rel, data in (extra_files or {}).items():
        atomic_write_bytes(staging / rel, data)

    manifest = Manifest(
        opforge_version=__version__,
        input_model=str(model_path.resolve()),
        input_model_relative=os.path.relpath(model_path.resolve(), out_dir.resolve()),
        output_model=out_model_name,
        libraries=libraries,
        harness=built.harness or "",
        dynamic_batch=vars(dynamic_batch) if dynamic_batch else None,
        build={"nvcc": find_nvcc(), "arch": target.arch, "gencode": gencode_flags(target.arch)},
        nodes=node_plugin,
        plugins=[
            PluginEntry(
                name=s.name,
                op_type=s.plan.op_type,
                nodes=s.nodes,
                plan=f"plans/{s.plan.key}.json",
                fatbin=f"plans/{s.plan.key}.fatbin",
                subgraph=f"plans/{s.plan.key}.onnx",
                library=built.library_of(s.name) or "",
                inputs=[vars(t) for t in s.plan.inputs],
                outputs=[vars(t) for t in s.plan.outputs],
                dims=[vars(d) for d in s.plan.dims],
                fields=[{"name": a.name, "type": a.field_type} for a in s.attrs],
                launches=len(s.plan.launches),
                workspace=s.plan.workspace,
            )
            for s in specs.values()
        ],
    )
    folder.commit(manifest)
    return GenerateResult(
        out_dir,
        out_dir / out_model_name,
        [out_dir / k for k in libraries],
        out_dir / MANIFEST_FILE,
        list(specs.values()),
    )
