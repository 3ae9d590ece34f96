"""CPU side of tuning: every configuration of the space lowered, emitted and compiled into one plugin library,
as a bundle the GPU side (opforge.tune.measure, no TVM there) measures.

Bundle layout: tune.json (workload, dims, candidates), subgraph.onnx, plugin_node.onnx, plans/, the library and
the harness. Candidates whose kernels come out identical to an earlier one's are measured once.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import onnx

from opforge.core.errors import OpforgeError
from opforge.core.schedule import ScheduleConfig, label
from opforge.extract.subgraph import NodeSubgraph
from opforge.lower.target import CudaTarget
from opforge.tune.records import TuningRecords, workload_key
from opforge.tune.space import candidates

BUNDLE_FILE = "tune.json"


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
    from opforge.build.package import LibraryGroup, package
    from opforge.core.fields import group_attrs, plugin_attrs
    from opforge.emit.onnx_rewrite import PLUGIN_DOMAIN
    from opforge.emit.plugin_cpp import PluginSpec
    from opforge.lower.tvm_lower import lower_subgraph

    say = progress or (lambda _m: None)
    target = target or CudaTarget()
    workload = workload_key(sub.key, target.arch)
    done = records.measured(workload) if records else set()
    todo = [c for c in (configs if configs is not None else candidates()) if label(c) not in done]
    out.mkdir(parents=True, exist_ok=True)
    (out / "plans").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    if sub.members:
        attrs = group_attrs(sub.members, sub.member_constants, opset)
    else:
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
    built = package([LibraryGroup("libcandidates.so", specs)], out, target.arch, isolate=True, harness=bool(specs))
    for e_ in entries:
        if "plugin" in e_:
            if e_["plugin"] in built.failed:
                e_["error"] = built.failed[e_["plugin"]][:300]
            else:
                e_["library"] = built.library_of(e_["plugin"])
    plugin_node = onnx.helper.make_node("candidate", [], [], name=node.name, domain=PLUGIN_DOMAIN)
    plugin_node.attribute.extend(a.onnx_attribute() for a in attrs)
    (out / "plugin_node.onnx").write_bytes(plugin_node.SerializeToString())
    (out / "subgraph.onnx").write_bytes(sub.model.SerializeToString())
    if reference_model is not None:
        (out / "reference.onnx").write_bytes(reference_model.SerializeToString())
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
