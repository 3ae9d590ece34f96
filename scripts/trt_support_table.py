#!/usr/bin/env python3
"""The built-in TensorRT support table `opforge inspect` falls back to when no TensorRT parser is installed:
for each op type, how many ONNX conformance cases (onnx.backend.test.case.node) TensorRT-RTX's ONNX parser accepts
and rejects. Runs on a CPU machine:

  python scripts/trt_support_table.py src/opforge/data/trt_support.json

TensorRT-RTX can abort the process on some plugin paths: cases are parsed in a child process that reports one
line per case, and a case that kills it counts as rejected; the next child resumes after it.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

_CHILD = r"""
import sys, warnings
warnings.simplefilter("ignore")
import onnx.backend.test.case.node as node_cases
import tensorrt_rtx as trt
start = int(sys.argv[1])
logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
cases = node_cases.collect_testcases(None)
for i in range(start, len(cases)):
    model = cases[i].model
    op = model.graph.node[-1].op_type if model.graph.node else "?"
    print(f"begin {i} {op}", flush=True)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # must outlive the parser that fills it
    parser = trt.OnnxParser(network, logger)
    try:
        ok = parser.parse(model.SerializeToString())
    except Exception:
        ok = False
    print(f"done {i} {op} {int(bool(ok))} {len(cases)}", flush=True)
"""


def main(out: Path) -> None:
    import tensorrt_rtx as trt

    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"accepted": 0, "rejected": 0})
    start, total, crashes = 0, None, 0
    while total is None or start < total:
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(start)], capture_output=True, text=True)
        last_begin = None
        for line in proc.stdout.splitlines():
            parts = line.split()
            if parts[0] == "begin":
                last_begin = (int(parts[1]), parts[2])
            elif parts[0] == "done":
                i, op, ok, total = int(parts[1]), parts[2], parts[3] == "1", int(parts[4])
                counts[op]["accepted" if ok else "rejected"] += 1
                start, last_begin = i + 1, None
        if last_begin is not None:  # the parser killed the process on this case
            counts[last_begin[1]]["rejected"] += 1
            crashes += 1
            start = last_begin[0] + 1
        elif total is None:
            raise SystemExit(f"the parser child produced nothing: {proc.stderr[-500:]}")
    table = {
        "parser": f"tensorrt_rtx {trt.__version__}",
        "source": "onnx.backend.test.case.node.collect_testcases(None)",
        "cases": total,
        "parser_crashes_counted_as_rejected": crashes,
        "date": dt.date.today().isoformat(),
        "command": "python scripts/trt_support_table.py " + str(out),
        "ops": dict(sorted(counts.items())),
    }
    out.write_text(json.dumps(table, indent=1) + "\n")
    acc = sum(c["accepted"] for c in counts.values())
    print(f"{total} cases ({acc} accepted, {total - acc} rejected, {crashes} crashes), {len(counts)} op types")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
