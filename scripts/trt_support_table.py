#!/usr/bin/env python3
"""The built-in TensorRT support table `opforge inspect` falls back to when no TensorRT parser is installed:
for each op type, how many ONNX conformance cases (onnx.backend.test.case.node) TensorRT-RTX's ONNX parser accepts
and rejects. Runs on a CPU machine:

  python scripts/trt_support_table.py src/opforge/data/trt_support.json

Parsing goes through opforge.trt_parser.accepts_many: a case that kills the parser counts as rejected.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path


def main(out: Path) -> None:
    import onnx.backend.test.case.node as node_cases
    import tensorrt_rtx as trt

    from opforge.trt_parser import accepts_many

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"accepted": 0, "rejected": 0})
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, case in enumerate(cases):
            p = Path(tmp) / f"{i}.onnx"
            p.write_bytes(case.model.SerializeToString())
            paths.append(str(p))
        accepted = accepts_many(paths)
    for case, ok in zip(cases, accepted):
        op = case.model.graph.node[-1].op_type if case.model.graph.node else "?"
        counts[op]["accepted" if ok else "rejected"] += 1
    table = {
        "parser": f"tensorrt_rtx {trt.__version__}",
        "source": "onnx.backend.test.case.node.collect_testcases(None)",
        "cases": len(cases),
        "date": dt.date.today().isoformat(),
        "command": "python scripts/trt_support_table.py " + str(out),
        "ops": dict(sorted(counts.items())),
    }
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{len(cases)} cases ({sum(accepted)} accepted), {len(counts)} op types")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
