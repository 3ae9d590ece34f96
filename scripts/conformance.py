#!/usr/bin/env python3
"""The ONNX conformance suite (1884 node cases) through opforge (see opforge.testing.conformance).

python scripts/conformance.py build .gpu_bundle/conformance    # CPU machine: classify, lower, nvcc, case data
python scripts/conformance.py run .gpu_bundle/conformance OUT  # GPU machine: run, compare, write OUT/conformance.*
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter, defaultdict
from pathlib import Path


def build(bundle: Path) -> None:
    from opforge import trt_parser
    from opforge.testing import conformance
    from opforge.verify.results import bundle_commit

    cases = conformance.load_cases()
    rows = conformance.build(bundle, cases, progress=print)
    # Does TensorRT's parser (TensorRT-RTX here) accept the original model?
    model_dir = bundle / "models"
    model_dir.mkdir(exist_ok=True)
    paths = []
    for c in cases:
        p = model_dir / f"{c.name}.onnx"
        p.write_bytes(c.model.SerializeToString())
        paths.append(str(p))
    for row, ok in zip(rows, trt_parser.accepts_many(paths)):
        row["trt_parser_accepts"] = ok
    info = json.loads((bundle / "conformance-build.json").read_text())
    info.update(rows=rows, commit=bundle_commit())
    (bundle / "conformance-build.json").write_text(json.dumps(info, indent=1))
    for scratch in ("models", "plans_tmp"):  # the GPU side needs cases/ and the build record only
        shutil.rmtree(bundle / scratch, ignore_errors=True)
    print(Counter(r.get("class", "built") for r in rows))


def run(bundle: Path, out: Path) -> int:
    from opforge.runtime.gpu import gpu_name
    from opforge.testing import conformance
    from opforge.verify.results import run_metadata, write_results

    device = gpu_name()  # asked in a child process: the cases run in forked workers (runtime.isolated)
    info = json.loads((bundle / "conformance-build.json").read_text())
    rows = conformance.run(bundle)
    counts = Counter(r["class"] for r in rows)
    eligible = [r for r in rows if r["class"] != "ineligible"]
    rejected = [r for r in eligible if not r.get("trt_parser_accepts")]
    summary = {
        "cases": len(rows),
        **{k: counts.get(k, 0) for k in conformance.CLASSES},
        "eligible": len(eligible),
        "pass_of_eligible": f"{100 * counts.get('pass', 0) / max(len(eligible), 1):.1f}%",
        "trt_rejected_eligible": len(rejected),
        "pass_of_trt_rejected_eligible": (
            f"{100 * sum(r['class'] == 'pass' for r in rejected) / max(len(rejected), 1):.1f}%"
        ),
    }
    by_op: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_op[r["op_type"]].append(r)
    lines = ["| op type | cases | eligible | pass | TRT parser accepts | top failure |", "|---|---|---|---|---|---|"]
    for op in sorted(by_op):
        rs = by_op[op]
        fails = Counter(f"{r['class']}: {r.get('reason', '')[:70]}" for r in rs if r["class"] not in ("pass",))
        top = fails.most_common(1)[0][0] if fails else ""
        lines.append(
            f"| {op} | {len(rs)} | {sum(r['class'] != 'ineligible' for r in rs)} | "
            f"{sum(r['class'] == 'pass' for r in rs)} | {sum(bool(r.get('trt_parser_accepts')) for r in rs)} | "
            f"{top.replace('|', '/')} |"
        )
    lines += ["", "## Cases TensorRT's parser rejects that opforge passes", ""]
    lines += [f"- {r['case']} ({r['op_type']})" for r in rejected if r["class"] == "pass"] or ["- none"]
    wrong = [r for r in rows if r["class"] == "wrong"]
    if wrong:
        lines += ["", "## Wrong results", "", "| case | max abs err | max rel err |", "|---|---|---|"]
        lines += [f"| {r['case']} | {r['max_abs_err']:.3g} | {r['max_rel_err']:.3g} |" for r in wrong]
    meta = run_metadata(
        device,
        {
            "opforge_commit": info.get("commit", "?"),
            "executor": "plugin libraries through the opforge harness (IPluginV3 call sequence, 2 contexts, 2 poisons)",
        },
    )
    write_results(out, "conformance", meta, rows, summary, "\n".join(lines))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    from opforge.verify.results import two_phase_main

    sys.exit(two_phase_main(__doc__, build, run))
