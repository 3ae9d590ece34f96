#!/usr/bin/env python3
"""Differential fuzzing of opforge against ONNX's reference (see opforge.testing.fuzz and docs/fuzz.md).

python scripts/fuzz.py build BUNDLE [--seed 1] [--per-op 20] [--ops A,B] [--cpu-check N] [--tuned]   # CPU
    (--tuned: each subgraph lowered under a configuration of the full tuning space drawn from the seed and the
    subgraph, as `opforge tune` could pick it, instead of DLight's defaults; results fuzz-tuned-h100.*)
python scripts/fuzz.py run BUNDLE OUT                                                      # GPU machine (no TVM)
python scripts/fuzz.py replay BUNDLE CASE [--gpu]     # one case again: lower + TVM llvm (CPU), or the harness (GPU)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path


def _drawn_configs(seed: int):
    """config_for(sub): a configuration of the full tuning space drawn from the seed and the subgraph (a family
    of cases sharing one symbolic node shares it), and the labels drawn so far, by subgraph."""
    import zlib

    from opforge.tune.space import candidates

    configs = [c for c in candidates() if c is not None]
    drawn: dict[str, str] = {}

    def config_for(sub):
        config = configs[zlib.crc32(f"{seed}:{sub.key}".encode()) % len(configs)]
        drawn[sub.key] = config.label
        return config

    return config_for, drawn


def build(bundle: Path, seed: int, per_op: int, ops: list[str] | None, cpu_check: int, tuned: bool = False) -> int:
    from opforge.testing import fuzz
    from opforge.verify.results import bundle_commit

    t0 = time.perf_counter()
    cases = fuzz.generate(seed, per_op, ops)
    t_gen = time.perf_counter() - t0
    print(f"{len(cases)} cases over {len({c.op_type for c in cases})} op types generated in {t_gen:.0f}s")
    checks: dict[str, dict] = {}
    if cpu_check:
        import numpy as np

        rng = np.random.default_rng(seed)
        sample = sorted(rng.choice(len(cases), size=min(cpu_check, len(cases)), replace=False))
        for k in sample:
            c = cases[int(k)]
            checks[c.name] = fuzz.cpu_check(c)
            if checks[c.name]["cpu_check"] == "wrong":
                small = fuzz.shrink(c, lambda t: fuzz.cpu_check(t)["cpu_check"] == "wrong")
                if small is not c:
                    checks[c.name]["shrunk_to"] = small.mutation.get("shrunk", "")
                    checks[c.name]["shrunk_shapes"] = [list(x.shape) for x in small.inputs]
        print("cpu check:", Counter(v["cpu_check"] for v in checks.values()))
    config_for, drawn = _drawn_configs(seed) if tuned else (None, {})
    rows = fuzz.build(bundle, cases, progress=print, config_for=config_for)
    for row in rows:
        row.update(checks.get(row["case"], {}))
    info = json.loads((bundle / fuzz.BUILD_RECORD).read_text())
    info.update(
        rows=rows,
        commit=bundle_commit(),
        seed=seed,
        per_op=per_op,
        ops=sorted(ops or []),
        tuned=tuned,
        configs=dict(Counter(drawn.values())),
        generate_s=round(t_gen, 1),
        total_s=round(time.perf_counter() - t0, 1),
    )
    (bundle / fuzz.BUILD_RECORD).write_text(json.dumps(info, indent=1))
    shutil.rmtree(bundle / "plans_tmp", ignore_errors=True)  # the GPU side needs cases/, fuzz-cases/, lib/, harness/
    print(Counter(r.get("class", "built") for r in rows), f"total {info['total_s']}s")
    return 0


def run(bundle: Path, out: Path) -> int:
    from opforge.runtime.gpu import gpu_name
    from opforge.testing import fuzz
    from opforge.verify.results import run_metadata, write_results

    device = gpu_name()  # asked in a child process: the cases run in forked workers (runtime.isolated)
    info = json.loads((bundle / fuzz.BUILD_RECORD).read_text())
    t0 = time.perf_counter()
    rows = fuzz.run(bundle)
    counts = Counter(r.get("class", "?") for r in rows)
    ran = [r for r in rows if r.get("class") in ("pass", "wrong", "runtime-failed")]
    summary = {
        "cases": len(rows),
        "op_types": len({r["op_type"] for r in rows}),
        **{
            k: counts.get(k, 0)
            for k in ("pass", "wrong", "lower-failed", "build-failed", "runtime-failed", "no-reference")
        },
        "through_harness": len(ran),
        "op_types_through_harness": len({r["op_type"] for r in ran}),
        # a wrong case is explained only when its result is the explanation's alternative (run again against it)
        "wrong_unexplained": sum(r.get("class") == "wrong" and not r.get("explanation_verified") for r in rows),
        "through_harness_symbolic": sum(r.get("shapes") == "symbolic" for r in ran),
        "plugins": len({(r.get("library"), r.get("plugin")) for r in ran}),
        "seed": info.get("seed"),
        "run_s": round(time.perf_counter() - t0, 1),
    }
    by_op: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_op[r["op_type"]].append(r)
    lines = ["| op type | cases | pass | wrong | lower-failed | other | top failure |", "|---|---|---|---|---|---|---|"]
    for op in sorted(by_op):
        rs = by_op[op]
        c = Counter(r.get("class") for r in rs)
        fails = Counter(f"{r['class']}: {r.get('reason', '')[:70]}" for r in rs if r.get("class") != "pass")
        top = fails.most_common(1)[0][0] if fails else ""
        other = len(rs) - c["pass"] - c["wrong"] - c["lower-failed"]
        top = top.replace("|", "/")
        lines.append(f"| {op} | {len(rs)} | {c['pass']} | {c['wrong']} | {c['lower-failed']} | {other} | {top} |")
    grid = [r for r in rows if r["op_type"] == "RoiAlign" and r.get("mutation", {}).get("grid")]
    if grid:
        lines += ["", "## RoiAlign grid (registry fuzz_grid; a point's family shares one plugin)", ""]
        lines += [
            "| spatial_scale | coordinate mode | mode | sampling ratio | cases | pass | shapes |",
            "|---|---|---|---|---|---|---|",
        ]
        points: dict[tuple, list[dict]] = defaultdict(list)
        for r in grid:
            g = r["mutation"]["grid"]
            key = (g["spatial_scale"], g["coordinate_transformation_mode"], g["mode"], g.get("sampling_ratio", "-"))
            points[key].append(r)
        for (scale, ctm, mode, ratio), rs in sorted(points.items(), key=lambda kv: (-kv[0][0], *map(str, kv[0][1:]))):
            passed = sum(r.get("class") == "pass" for r in rs)
            kinds = ", ".join(sorted({r.get("shapes", "static")[:8] for r in rs}))
            lines.append(f"| {scale:g} | {ctm} | {mode} | {ratio} | {len(rs)} | {passed} | {kinds} |")
    wrong = [r for r in rows if r.get("class") == "wrong"]
    if wrong:
        lines += ["", "## Wrong results (replay: python scripts/fuzz.py replay BUNDLE CASE)", ""]
        lines += [
            "An explanation counts only where the plugin's result matches the outputs it says a correct",
            "implementation gives (run again against them: `verified`).",
            "",
            "| case | seed | mutation | max abs err | explanation | verified |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['case']} | {r['seed']} | {json.dumps(r.get('mutation', {}))[:120]} | {r['max_abs_err']:.3g} | "
            f"{r.get('explanation', '')[:80]} | {'yes' if r.get('explanation_verified') else 'no'} |"
            for r in wrong
        ]
    ops = info.get("ops") or []
    meta = run_metadata(
        device,
        {
            "opforge_commit": info.get("commit", "?"),
            "seed": info.get("seed"),
            "per_op": info.get("per_op"),
            "ops": ops,
            # --tuned: every plan under a configuration of the tuning space (how many subgraphs got each)
            "tuned_configs": info.get("configs") if info.get("tuned") else None,
        },
    )
    # A bundle built for some op types (--ops), or under tuned configurations, writes its own results beside the
    # full run's.
    name = (
        "fuzz-"
        + ("tuned-" if info.get("tuned") else "")
        + ("grids-defaults-" if info.get("per_op") == 0 else "")  # only the grids' and the defaults' cases
        + "".join(o.lower() + "-" for o in ops)
        + "h100"
    )
    write_results(out, name, meta, rows, summary, "\n".join(lines))
    print(json.dumps(summary))
    return 0


def replay(bundle: Path, name: str, gpu: bool) -> int:
    from opforge.testing import fuzz

    case = fuzz.load_case(bundle, name)
    print(json.dumps(case.record()))
    if gpu:
        from opforge.build.package import HARNESS_PATH
        from opforge.testing import conformance
        from opforge.verify.check import POISONS
        from opforge.verify.compare import compare_contexts
        from opforge.verify.harness import Harness

        info = json.loads((bundle / fuzz.BUILD_RECORD).read_text())
        row = next(r for r in info["rows"] if r["case"] == name)
        built = conformance.load_built_case(bundle, row, Harness(bundle / HARNESS_PATH), {})
        for poison in POISONS:
            for c in compare_contexts(built.plan.outputs, built.call(poison), built.expected):
                print(poison, c.as_dict())
        return 0
    from opforge.lower.tvm_lower import lower_subgraph
    from opforge.testing import conformance

    sub, _ = conformance.case_subgraph(case.as_case())
    plan = lower_subgraph(sub)
    print(f"lowered: {len(plan.launches)} launches")
    print(json.dumps(fuzz.cpu_check(case)))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("bundle", type=Path)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--per-op", type=int, default=20)
    b.add_argument("--ops", default="", help="comma-separated op types (default: every op with a seed form)")
    b.add_argument("--cpu-check", type=int, default=0, help="TVM-llvm check of a seeded sample of N cases")
    b.add_argument("--tuned", action="store_true", help="lower under configurations drawn from the tuning space")
    r = sub.add_parser("run")
    r.add_argument("bundle", type=Path)
    r.add_argument("out", type=Path)
    p = sub.add_parser("replay")
    p.add_argument("bundle", type=Path)
    p.add_argument("case")
    p.add_argument("--gpu", action="store_true", help="through the harness (GPU machine) instead of TVM llvm")
    a = ap.parse_args()
    if a.cmd == "build":
        ops = [o for o in a.ops.split(",") if o] or None
        return build(a.bundle, a.seed, a.per_op, ops, a.cpu_check, a.tuned)
    if a.cmd == "run":
        return run(a.bundle, a.out)
    return replay(a.bundle, a.case, a.gpu)


if __name__ == "__main__":
    sys.exit(main())
