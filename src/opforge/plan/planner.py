"""Planning: the kernel plan of each selected node, lowered once per distinct subgraph and written under
<out>/plans/<key>.{json,cu,onnx} (the plan, its CUDA source, its one-node subgraph). Fatbins are built by
opforge.build.fatbin.

Plans are cached by content hash (the subgraph's bytes + TVM version + target): identical nodes share one plan,
and a re-run reuses what an earlier (even interrupted) run finished.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from opforge.core.cache import default_cache_dir
from opforge.core.errors import OpforgeError
from opforge.core.fsutil import atomic_write_bytes, atomic_write_text
from opforge.core.kernel_plan import LOWERING_REVISION, KernelPlan
from opforge.core.schedule import ScheduleConfig
from opforge.extract.subgraph import NodeSubgraph
from opforge.lower.target import CudaTarget

log = logging.getLogger(__name__)


@dataclass
class PlannedNode:
    node_name: str
    op_type: str
    plan_key: str
    plan: KernelPlan
    plan_path: Path
    fatbin_path: Path
    subgraph_path: Path


@functools.cache
def lowering_digest() -> str:
    """A digest of the lowering's own source (opforge.lower and the op registry, opforge.ops). A plan cached by an
    edited lowering is not reused even where LOWERING_REVISION was not bumped with the edit."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for package in ("lower", "ops"):
        for path in sorted((root / package).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _cache_key(sub: NodeSubgraph, target: CudaTarget, config: ScheduleConfig | None = None) -> str:
    from opforge.lower.tvm_lower import producer_name

    h = hashlib.sha256(sub.model.SerializeToString(deterministic=True))
    h.update(f"{producer_name(config)}|{target}|{LOWERING_REVISION}|{lowering_digest()}".encode())
    return h.hexdigest()[:24]


def plan_subgraphs(
    subs: list[NodeSubgraph],
    out_dir: Path,
    target: CudaTarget | None = None,
    cache_dir: Path | None = None,
    on_progress=None,
    config_for: Callable[[NodeSubgraph], ScheduleConfig | None] | None = None,
    before_lowering: Callable[[NodeSubgraph], None] | None = None,
) -> list[PlannedNode]:
    """Lower each distinct subgraph once and write its plan under out_dir/plans/<key>.*
    config_for gives a subgraph's tuned schedule configuration (None: DLight's defaults); before_lowering is
    called once per distinct subgraph, before it is lowered or read from the cache (progress lines).
    TVM's own messages are shown only when verbose (opforge.core.quiet)."""
    from opforge.core.quiet import quiet_native
    from opforge.lower.tvm_lower import lower_subgraph

    target = target or CudaTarget()
    cache = (cache_dir or default_cache_dir()) / "plans"
    plans_dir = out_dir / "plans"
    plans_dir.mkdir(parents=True, exist_ok=True)
    by_key: dict[str, KernelPlan] = {}
    for i, sub in enumerate(subs):
        if sub.key in by_key:
            continue
        if before_lowering:
            before_lowering(sub)
        config = config_for(sub) if config_for else None
        cached = cache / f"{_cache_key(sub, target, config)}.json"
        plan = None
        if cached.is_file():
            try:
                plan = KernelPlan.load(cached)
            except (ValueError, KeyError, json.JSONDecodeError):
                plan = None  # stale or damaged entry: lower again
        if plan is None:
            with quiet_native():
                plan = lower_subgraph(sub, target, config)
            plan.save(cached)
        by_key[sub.key] = plan
        plan.save(plans_dir / f"{plan.key}.json")
        atomic_write_text(plans_dir / f"{plan.key}.cu", plan.cuda_source)
        atomic_write_bytes(plans_dir / f"{plan.key}.onnx", sub.model.SerializeToString())
        if on_progress:
            on_progress(i + 1, len(subs), sub)

    out = []
    for s in subs:
        plan = by_key[s.key]
        stem = plans_dir / plan.key
        out.append(
            PlannedNode(
                s.node_name,
                s.op_type,
                plan.key,
                plan,
                stem.with_suffix(".json"),
                stem.with_suffix(".fatbin"),
                stem.with_suffix(".onnx"),
            )
        )
    return out


def load_subgraph(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise OpforgeError(f"{path}: missing (run `opforge plan` or `opforge generate` first)")
    return onnx.load(str(path))
