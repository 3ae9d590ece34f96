#!/usr/bin/env python3
"""Data-dependent output shapes on the GPU: the conformance cases of NonZero, Unique, Compress and NonMaxSuppression
(and larger
seeded cases of each: many zeros, repeated values, a non-leading data-dependent axis) through the plugin harness,
which plays TensorRT's part (declareSizeTensor, outputs allocated at the upper bound, poisoned, trimmed to the size
tensors' values after the enqueue).

python scripts/check_data_dependent.py build .gpu_bundle/datadep       # CPU machine: lower, nvcc, case data
python scripts/check_data_dependent.py run .gpu_bundle/datadep OUT   # GPU machine: run, compare, write
                                                                     # OUT/data-dependent-h100.{json,md}; exit 1
                                                                     # unless every case passes
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np

OP_TYPES = ("NonZero", "Unique", "Compress", "NonMaxSuppression")


def _model(op: str, inputs: list[tuple[str, int, list[int]]], outputs: list[tuple[str, int]], **attrs):
    from onnx import helper

    node = helper.make_node(op, [n for n, _, _ in inputs], [n for n, _ in outputs], name="n", **attrs)
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def larger_cases() -> list:
    """Seeded cases bigger than the conformance ones, with expected outputs from ONNX's reference."""
    from onnx import TensorProto
    from onnx.reference import ReferenceEvaluator

    from opforge.testing.conformance import Case

    F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
    rng = np.random.default_rng(16)
    uniq = [("Y", I64), ("indices", I64), ("inverse_indices", I64), ("counts", I64)]
    specs = [
        ("dd_nonzero_64x257", _model("NonZero", [("x", F, [64, 257])], [("y", I64)]),
         [(rng.standard_normal((64, 257)) * (rng.random((64, 257)) < 0.3)).astype(np.float32)]),
        ("dd_nonzero_3d_bool", _model("NonZero", [("x", B, [5, 6, 7])], [("y", I64)]),
         [rng.random((5, 6, 7)) < 0.5]),
        ("dd_unique_sorted_3000", _model("Unique", [("X", I64, [3000])], uniq, sorted=1),
         [rng.integers(0, 200, 3000).astype(np.int64)]),
        ("dd_unique_first_occurrence_3000", _model("Unique", [("X", I64, [3000])], uniq, sorted=0),
         [rng.integers(-100, 100, 3000).astype(np.int64)]),
        ("dd_compress_axis0_512x300", _model("Compress", [("x", F, [512, 300]), ("c", B, [512])], [("y", F)], axis=0),
         [rng.standard_normal((512, 300)).astype(np.float32), rng.random(512) < 0.5]),
        ("dd_compress_axis1_64x300", _model("Compress", [("x", F, [64, 300]), ("c", B, [300])], [("y", F)], axis=1),
         [rng.standard_normal((64, 300)).astype(np.float32), rng.random(300) < 0.3]),
    ]  # fmt: skip
    nms = _model(
        "NonMaxSuppression",
        [
            ("boxes", F, [2, 300, 4]),
            ("scores", F, [2, 3, 300]),
            ("max_out", I64, [1]),
            ("iou", F, [1]),
            ("score", F, [1]),
        ],
        [("y", I64)],
    )
    lo = rng.uniform(0, 40, (2, 300, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(1, 8, (2, 300, 2))], -1).astype(np.float32)
    nms_in = [boxes, rng.random((2, 3, 300)).astype(np.float32), np.array([40], np.int64),
              np.array([0.4], np.float32), np.array([0.1], np.float32)]  # fmt: skip
    specs.append(("dd_nms_2x3x300", nms, nms_in))
    cases = []
    for name, m, inputs in specs:
        names = [vi.name for vi in m.graph.input]
        outs = [np.asarray(o) for o in ReferenceEvaluator(m).run(None, dict(zip(names, inputs)))]
        cases.append(Case(name, m.graph.node[0].op_type, m, inputs, outs))
    return cases


def build(bundle: Path) -> None:
    from opforge.testing import conformance

    cases = [c for c in conformance.load_cases() if c.op_type in OP_TYPES] + larger_cases()
    from opforge.verify.results import bundle_commit

    rows = conformance.build(bundle, cases, progress=print)
    record = bundle / conformance.BUILD_RECORD
    info = json.loads(record.read_text())
    info["commit"] = bundle_commit()
    record.write_text(json.dumps(info, indent=1))
    shutil.rmtree(bundle / "plans_tmp", ignore_errors=True)
    for r in rows:
        print(f"{r['case']:45s} {r.get('class', 'built')} {r.get('reason', '')[:200]}")
    print(Counter(r.get("class", "built") for r in rows))


def run(bundle: Path, out: Path) -> int:
    from opforge.runtime.launcher import Context
    from opforge.testing import conformance
    from opforge.verify.results import run_metadata, write_results

    device = Context(0).name
    print("device:", device)
    info = json.loads((bundle / conformance.BUILD_RECORD).read_text())
    rows = conformance.run(bundle)
    lines = ["| case | op type | result | max abs err / reason |", "|---|---|---|---|"]
    for r in rows:
        err = f"{r['max_abs_err']:.3g}" if "max_abs_err" in r else r.get("reason", "")[:200].replace("|", "/")
        print(f"{r['case']:45s} {r.get('class', '?'):15s} {err}")
        lines.append(f"| {r['case']} | {r['op_type']} | {r.get('class', '?')} | {err} |")
    counts = Counter(r.get("class", "?") for r in rows)
    summary = {"cases": len(rows), **counts}
    meta = run_metadata(device, {"opforge_commit": info.get("commit", "?")})
    write_results(out, "data-dependent-h100", meta, rows, summary, "\n".join(lines))
    print(json.dumps(counts))
    return 0 if set(counts) == {"pass"} else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"] and len(sys.argv) == 3:
        build(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["run"] and len(sys.argv) == 4:
        sys.exit(run(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
