#!/usr/bin/env python3
"""The CUDA sources of the bench plans (every bench case untuned, and with the tuned configuration recorded in
results/bench-h100.json), as one sha256 per plan: a refactoring that must not change generated code is checked by
running this before and after and comparing the two files.

python scripts/bench_plan_sources.py OUT.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(out: Path) -> int:
    from opforge.bench.suite import cases
    from opforge.extract.subgraph import extract_nodes

    try:
        from opforge.core.schedule import ScheduleConfig
    except ImportError:  # before the core layer existed
        from opforge.tune.space import ScheduleConfig
    from opforge.lower.tvm_lower import lower_subgraph

    tuned = {
        r["case"]: r.get("tuned_config") for r in json.loads((ROOT / "results/bench-h100.json").read_text())["rows"]
    }
    rows = {}
    for case in cases():
        model = case.model()
        sub = extract_nodes(model, [model.graph.node[0]])[0]
        configs = {"untuned": None, "tuned": None}
        label = tuned.get(case.name)
        if label and label != "dlight-default":
            threads, rest = label[1:].split("x")
            configs["tuned"] = ScheduleConfig(
                int(threads), int(rest[:-1]), "strided" if rest[-1] == "s" else "contiguous"
            )
        for kind, config in configs.items():
            plan = lower_subgraph(sub, None, config)
            rows[f"{case.name}/{kind}"] = hashlib.sha256(plan.cuda_source.encode()).hexdigest()
            print(case.name, kind, rows[f"{case.name}/{kind}"][:16], flush=True)
    out.write_text(json.dumps(rows, indent=1, sort_keys=True))
    print(f"{len(rows)} plans")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
