"""CPU side of tuning: every configuration of the space lowered, emitted and compiled into one plugin library,
as a bundle the GPU side (opforge.tune.measure, no TVM there) measures.

Bundle layout: tune.json (workload, dims, candidates), subgraph.onnx, plugin_node.onnx, plans/, the library and
the harness. Candidates whose kernels come out identical to an earlier one's are measured once.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import onnx

from opforge.errors import OpforgeError
from opforge.extract.subgraph import NodeSubgraph
from opforge.lower.target import CudaTarget
from opforge.tune.records import TuningRecords, workload_key
from opforge.tune.space import ScheduleConfig, candidates, label

BUNDLE_FILE = "tune.json"
HARNESS_NAME = "libopforge_harness.so"


def bundles_under(folder: Path) -> list[Path]:
    """The tuning bundle `folder`, or the bundles in its subfolders (as `opforge tune -o` writes them)."""
    return sorted({p.parent for p in [folder / BUNDLE_FILE, *folder.glob(f"*/{BUNDLE_FILE}")] if p.is_file()})


def build_bundle(
    sub: NodeSubgraph,
    node: onnx.NodeProto,
    opset: int,
    out: Path,
    dims: dict[str, int],
    records: TuningRecords | None = None,
    target: CudaTarget | None = None,
    configs: list[ScheduleConfig | None] | None = None,
    progress=None,
    reference_model: onnx.ModelProto | None = None,
) -> dict:
    """Build the candidates not yet in `records` for this workload; returns the bundle's description.
    reference_model: a float32 twin of a float16/bfloat16 subgraph to check candidates against (the CPU
    reference runtimes lack most half-precision kernels); its outputs are rounded to the plan's dtypes."""
    from opforge.build.nvcc import BuildError
    from opforge.build.plugin_build import build_harness, build_library
    from opforge.emit.fields import plugin_attrs
    from opforge.emit.onnx_rewrite import PLUGIN_DOMAIN
    from opforge.emit.plugin_cpp import PluginSpec, write_sources
    from opforge.lower.tvm_lower import lower_subgraph
    from opforge.planning import default_cache_dir

    say = progress or (lambda _m: None)
    target = target or CudaTarget()
    workload = workload_key(sub.key, target.arch)
    done = records.measured(workload) if records else set()
    todo = [c for c in (configs if configs is not None else candidates()) if label(c) not in done]
    out.mkdir(parents=True, exist_ok=True)
    (out / "plans").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    attrs = plugin_attrs(node, sub.constant_inputs, opset)
    specs, entries, seen = [], [], {}
    op = re.sub(r"[^0-9A-Za-z]", "", sub.op_type)
    for config in todo:
        entry = {"label": label(config), "config": config.to_dict() if config else None}
        try:
            plan = lower_subgraph(sub, target, config)
        except OpforgeError as e:
            entries.append({**entry, "error": str(e)[:300]})
            continue
        # Identical kernels and launches (the key-derived symbol prefix aside) need one measurement only.
        fingerprint = re.sub(r"opf_[0-9a-f]{10}_", "opf_", plan.cuda_source) + json.dumps(
            [(lc.grid, lc.block, lc.shared_mem) for lc in plan.launches]
        )
        if fingerprint in seen:
            entries.append({**entry, "same_as": seen[fingerprint]})
            continue
        seen[fingerprint] = entry["label"]
        name = f"{op}_opf{plan.key[:8]}"
        plan.save(out / "plans" / f"{plan.key}.json")
        specs.append(PluginSpec(name, plan, attrs, [node.name]))
        entries.append({**entry, "plugin": name, "plan": f"plans/{plan.key}.json"})
    lowered_s = time.perf_counter() - t0
    say(f"{len(todo)} candidates lowered ({len(specs)} distinct) in {lowered_s:.1f}s")
    library = ""
    if specs:
        files = write_sources(specs, out / "src")
        try:
            build_library(files, out / "libcandidates.so", target.arch, default_cache_dir() / "objects", unity=True)
            library = "libcandidates.so"
        except BuildError:
            # One candidate's kernels do not compile: build them one library each, keep the ones that do.
            by_plugin = {e["plugin"]: e for e in entries if "plugin" in e}
            for k, s in enumerate(specs):
                lib = f"libcandidate{k}.so"
                try:
                    f1 = write_sources([s], out / f"src{k}")
                    build_library(f1, out / lib, target.arch, default_cache_dir() / "objects", unity=True)
                    by_plugin[s.name]["library"] = lib
                except BuildError as e:
                    by_plugin[s.name]["error"] = str(e)[:300]
        build_harness(out / HARNESS_NAME)
    for e_ in entries:
        if "plugin" in e_ and "error" not in e_:
            e_.setdefault("library", library)
    plugin_node = onnx.helper.make_node("candidate", [], [], name=node.name, domain=PLUGIN_DOMAIN)
    plugin_node.attribute.extend(a.onnx_attribute() for a in attrs)
    (out / "plugin_node.onnx").write_bytes(plugin_node.SerializeToString())
    (out / "subgraph.onnx").write_bytes(sub.model.SerializeToString())
    if reference_model is not None:
        (out / "reference.onnx").write_bytes(reference_model.SerializeToString())
    for scratch in out.glob("src*"):  # the GPU side needs the libraries only
        shutil.rmtree(scratch, ignore_errors=True)
    info = {
        "workload": workload,
        "op_type": sub.op_type,
        "node": node.name,
        "arch": target.arch,
        "dims": dims,
        "candidates": entries,
        "already_measured": sorted(done),
        "build_s": round(time.perf_counter() - t0, 1),
    }
    (out / BUNDLE_FILE).write_text(json.dumps(info, indent=1))
    return info
