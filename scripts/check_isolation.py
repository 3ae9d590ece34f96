#!/usr/bin/env python3
"""Fault isolation on the GPU (opforge.runtime.isolated): a plugin whose kernel kills its CUDA context or never
ends fails alone, and the plugins after it are still checked.

Ten conformance cases are built as for the conformance suite; three of them get a sabotaged kernel (a trap, a
store to an unmapped address, a spin that never ends: injected at the start of their plan's first kernel, for
one thread). The GPU side runs the bundle twice through the conformance runner: in worker processes (the
default, a case timing out after CASE_TIMEOUT_S), and then in one process as before isolation existed (without
the spinning case, which would hang it), to show what the isolation saves.

  python scripts/check_isolation.py build .gpu_bundle/isolation    # CPU machine: lower, sabotage, nvcc
  python scripts/check_isolation.py run .gpu_bundle/isolation OUT  # GPU machine: OUT/isolation-h100.*
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

CASES = [
    "test_abs",
    "test_relu",
    "test_sigmoid",
    "test_tanh",
    "test_exp",
    "test_erf",
    "test_softsign",
    "test_neg",
    "test_reciprocal",
    "test_sqrt",
]
# case -> the CUDA statement run first by thread 0 of block 0 of its plan's first kernel
SABOTAGE = {
    "test_sigmoid": "__trap();",
    "test_erf": "*(volatile float*)(~(size_t)0 - 15) = 1.0f;",
    # A loop nvcc must keep: an asm statement marked volatile is a side effect (a loop over a volatile local
    # was compiled away).
    "test_reciprocal": 'for (;;) { asm volatile("nanosleep.u32 1000;"); }',
}
KIND = {"test_sigmoid": "trap", "test_erf": "illegal address", "test_reciprocal": "never ends"}
CASE_TIMEOUT_S = 30.0
RECORD = "isolation-build.json"
IN_PROCESS_RECORD = "isolation-in-process.json"


def sabotage(case: str, plan):
    """The plan with its first kernel's sabotage (if the case has one) inserted at the kernel's first brace."""
    code = SABOTAGE.get(case)
    if code is None:
        return plan
    source = plan.cuda_source
    m = re.search(r'extern "C" __global__ [^{]*\{', source)
    if m is None:
        raise SystemExit(f"{case}: no kernel found in its plan's CUDA source")
    inject = f"\n  if (blockIdx.x == 0 && threadIdx.x == 0) {{ {code} }}\n"
    plan.cuda_source = source[: m.end()] + inject + source[m.end() :]
    return plan


def build(bundle: Path) -> None:
    from opforge.testing import conformance
    from opforge.verify.results import bundle_commit

    cases = conformance.load_cases(set(CASES))
    cases.sort(key=lambda c: CASES.index(c.name))
    rows = conformance.build(bundle, cases, progress=print, record=RECORD, library_stem="isolation", plan_hook=sabotage)
    bad = [r["case"] for r in rows if not r.get("built")]
    if bad:
        raise SystemExit(f"cases not built: {bad}")
    info = json.loads((bundle / RECORD).read_text())
    info.update(commit=bundle_commit())
    (bundle / RECORD).write_text(json.dumps(info, indent=1))
    # The in-process run leaves out the spinning case: nothing would end it.
    spin = [c for c, kind in KIND.items() if kind == "never ends"]
    (bundle / IN_PROCESS_RECORD).write_text(
        json.dumps({**info, "rows": [r for r in info["rows"] if r["case"] not in spin]}, indent=1)
    )
    print(f"{len(rows)} cases built, {len(SABOTAGE)} sabotaged")


def run(bundle: Path, out: Path) -> int:
    from opforge.runtime.gpu import gpu_name
    from opforge.testing import conformance
    from opforge.verify.results import run_metadata, write_results

    device = gpu_name()  # asked in a child process: this one must not start CUDA before the isolated run
    commit = json.loads((bundle / RECORD).read_text()).get("commit", "?")
    t0 = time.perf_counter()
    isolated = {r["case"]: r for r in conformance.run(bundle, record=RECORD, timeout_s=CASE_TIMEOUT_S)}
    isolated_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    together = {r["case"]: r for r in conformance.run(bundle, record=IN_PROCESS_RECORD, isolate=False)}
    together_s = time.perf_counter() - t0

    rows = []
    for name in CASES:
        iso, one = isolated[name], together.get(name)
        rows.append(
            {
                "case": name,
                "sabotage": KIND.get(name, ""),
                "isolated": iso["class"],
                "isolated_reason": iso.get("reason", ""),
                "one_process": one["class"] if one else "not run (it would hang the process)",
                "one_process_reason": one.get("reason", "") if one else "",
            }
        )
    good = [r for r in rows if not r["sabotage"]]
    sabotaged = [r for r in rows if r["sabotage"]]
    summary = {
        "cases": len(rows),
        "sabotaged": len(sabotaged),
        "isolated_good_pass": sum(r["isolated"] == "pass" for r in good),
        "isolated_sabotaged_runtime_failed": sum(r["isolated"] == "runtime-failed" for r in sabotaged),
        "one_process_good_pass": sum(r["one_process"] == "pass" for r in good),
        "good": len(good),
        "isolated_s": round(isolated_s, 1),
        "one_process_s": round(together_s, 1),
    }
    ok = (
        summary["isolated_good_pass"] == len(good)
        and summary["isolated_sabotaged_runtime_failed"] == len(sabotaged)
        and all(r["isolated_reason"] for r in sabotaged)
    )
    summary["claim_holds"] = ok
    lines = [
        "Ten conformance cases, three with a sabotaged kernel, run by the conformance runner in worker processes",
        f"(opforge.runtime.isolated, a case timing out after {CASE_TIMEOUT_S:g} s), then in one process as before",
        "(without the spinning case, which would hang it).",
        "",
        "| case | sabotage | in workers | why | in one process | why |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['sabotage'] or '-'} | {r['isolated']} | {r['isolated_reason'][:90]} | "
            f"{r['one_process']} | {r['one_process_reason'][:90]} |"
        )
    meta = run_metadata(device, {"opforge_commit": commit})
    write_results(out, "isolation-h100", meta, rows, summary, "\n".join(lines))
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    from opforge.verify.results import two_phase_main

    sys.exit(two_phase_main(__doc__, build, run))
