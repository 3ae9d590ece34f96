"""`opforge generate`: ONNX model + node selection -> plugin library, rewritten model, sources and manifest.

Everything is produced in a staging folder inside the output folder and moved into place at the end, so an
interrupted or failed run leaves the output folder as it was. The input model is never written.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from opforge import __version__
from opforge.build.nvcc import find_nvcc, gencode_flags
from opforge.build.trt_builtin_plugins import is_trt_builtin_plugin
from opforge.emit.fields import plugin_attrs
from opforge.emit.onnx_rewrite import rewrite_model
from opforge.emit.plugin_cpp import PluginSpec, write_sources
from opforge.errors import OpforgeError, UsageError
from opforge.extract import extract_nodes, load_model, select_nodes
from opforge.extract.model_io import opset_of
from opforge.extract.subgraph import Dim
from opforge.fsutil import atomic_write_bytes, atomic_write_text
from opforge.lower.target import CudaTarget
from opforge.tune.records import TuningRecords

LIBRARY_NAME = "libopforge_plugins.so"
HARNESS_NAME = "libopforge_harness.so"
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
    return f"{op_type}_opf{key[:8]}"


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
) -> GenerateResult:
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
    model = load_model(model_path)
    nodes = select_nodes(model, node_names, node_types, plugin_name_dict)
    say(f"extracting {len(nodes)} node(s)")
    subs = extract_nodes(model, nodes, input_shapes, dynamic_batch is not None)

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".opforge-staging-", dir=out_dir))
    try:
        from opforge.build.plugin_build import build_harness, build_library
        from opforge.planning import plan_subgraphs

        say("lowering with TVM and compiling kernels")
        planned = plan_subgraphs(subs, staging, target, config_for=_tuned_configs(target, tuning_records))
        opset = opset_of(model)
        specs: dict[str, PluginSpec] = {}
        replacements = {}
        node_plugin = {}
        for node, sub, p in zip(nodes, subs, planned):
            name = (plugin_name_dict or {}).get(node.name) or default_plugin_name(node.op_type, p.plan.key)
            check_plugin_name(name, node.name)
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
            replacements[node.name] = (name, sub.input_names, attrs)
            node_plugin[node.name] = name

        say(f"emitting and building {len(specs)} plugin(s)")
        libraries: dict[str, list[str]] = {}
        groups = [[s] for s in specs.values()] if library_per_plugin else [list(specs.values())]
        for group in groups:
            lib_name = f"lib{group[0].name}.so" if library_per_plugin else LIBRARY_NAME
            src_dir = staging / "src" / (group[0].name if library_per_plugin else "")
            files = write_sources(group, src_dir)
            build_library(files, staging / lib_name, target.arch)
            libraries[lib_name] = [s.name for s in group]
            shutil.rmtree(src_dir / "obj", ignore_errors=True)
        build_harness(staging / "harness" / HARNESS_NAME)

        rewritten = rewrite_model(model, replacements)
        try:
            onnx.checker.check_model(rewritten)
        except onnx.checker.ValidationError as e:
            raise OpforgeError(f"the rewritten model fails onnx.checker: {str(e).splitlines()[0]}") from None
        atomic_write_bytes(staging / out_model_name, rewritten.SerializeToString())

        manifest = {
            "opforge_version": __version__,
            "input_model": str(model_path),
            "output_model": out_model_name,
            "libraries": libraries,
            "harness": f"harness/{HARNESS_NAME}",
            "dynamic_batch": vars(dynamic_batch) if dynamic_batch else None,
            "build": {"nvcc": find_nvcc(), "arch": target.arch, "gencode": gencode_flags(target.arch)},
            "nodes": node_plugin,
            "plugins": [
                {
                    "name": s.name,
                    "op_type": s.plan.op_type,
                    "nodes": s.nodes,
                    "plan": f"plans/{s.plan.key}.json",
                    "fatbin": f"plans/{s.plan.key}.fatbin",
                    "subgraph": f"plans/{s.plan.key}.onnx",
                    "library": next(k for k, v in libraries.items() if s.name in v),
                    "inputs": [vars(t) for t in s.plan.inputs],
                    "outputs": [vars(t) for t in s.plan.outputs],
                    "dims": [vars(d) for d in s.plan.dims],
                    "fields": [{"name": a.name, "type": a.field_type} for a in s.attrs],
                    "launches": len(s.plan.launches),
                    "workspace": s.plan.workspace,
                }
                for s in specs.values()
            ],
        }
        atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=1))
        for entry in sorted(staging.iterdir()):
            dest = out_dir / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            entry.replace(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return GenerateResult(
        out_dir,
        out_dir / out_model_name,
        [out_dir / k for k in libraries],
        out_dir / "manifest.json",
        list(specs.values()),
    )
