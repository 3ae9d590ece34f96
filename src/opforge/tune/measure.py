"""GPU side of tuning (no TVM needed): each candidate plugin of a bundle through the harness, timed (back-to-back
enqueues in a CUDA graph, CUDA events, an L2 flush before every replay, the median of the replays), then, from the
fastest, checked against the ONNX reference on fresh random inputs under every output poison until FINALISTS
pass: a candidate wins only if checked. DLight's default is always checked (it is the untuned baseline).

With several GPUs on the host, candidates are split over them, one worker process per GPU.

python -m opforge.tune.measure BUNDLE [--part I/N]   # writes BUNDLE/measurements[-partI].json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

from opforge.build.package import HARNESS_PATH
from opforge.tune.candidates import BUNDLE_FILE
from opforge.tune.records import Record

CALLS_PER_GRAPH = 20
REPLAYS = 50
TIMING_BUDGET_US = 2e6  # a slow candidate is timed with fewer calls and replays: at most ~2 s of GPU time each
FINALISTS = 3  # the fastest candidates that pass the check under every poison; only they may win
UNCHECKED = "timed, not checked: slower than the checked finalists"


def measure_bundle(
    bundle: Path, part: tuple[int, int] = (0, 1), progress=None, isolate: bool = True, device: str | None = None
) -> list[Record]:
    """Every candidate of the bundle (those of `part` (i, n): every n-th from the i-th) timed, the fastest
    checked. Candidates run in forked worker processes (opforge.runtime.isolated; this process must not have
    started CUDA): one whose kernel faults, whose plugin crashes or that hangs fails alone, naming why, and the
    rest are measured in a fresh process. `isolate=False` runs them in this process (the benchmark scripts, whose
    process runs PyTorch on the GPU too); `device`: the GPU's name where the caller knows it."""
    from opforge.core.fields import parser_fields
    from opforge.core.kernel_plan import KernelPlan
    from opforge.runtime.gpu import gpu_name
    from opforge.runtime.isolated import run_isolated
    from opforge.verify.check import POISONS, input_shapes
    from opforge.verify.compare import compare_contexts
    from opforge.verify.harness import Harness, TimingRequest
    from opforge.verify.inputs import make_inputs

    info = json.loads((bundle / BUNDLE_FILE).read_text())
    mine = [e for k, e in enumerate(info["candidates"]) if k % part[1] == part[0]]
    runnable = [e for e in mine if "plugin" in e and "error" not in e]
    device = device or gpu_name()
    dims = info["dims"]

    def record(entry: dict, **kw) -> Record:
        return Record(info["workload"], entry["label"], entry["config"], device=device, dims=dims, **kw)

    out: list[Record] = [record(e, ok=False, us=None, error=e["error"]) for e in mine if "error" in e]
    if not runnable:
        return out
    model = onnx.load(str(bundle / "subgraph.onnx"))
    node = onnx.NodeProto.FromString((bundle / "plugin_node.onnx").read_bytes())
    first = KernelPlan.load(bundle / runnable[0]["plan"])
    # Drawn and referenced here, on the CPU, once: every worker inherits them.
    inputs = make_inputs(model, input_shapes(first, dims), np.random.default_rng())
    refs = reference(bundle, model, inputs, [o.dtype for o in first.outputs])

    def setup() -> Harness:
        return Harness(bundle / HARNESS_PATH)

    def runner(harness: Harness, entry: dict):
        plan = KernelPlan.load(bundle / entry["plan"])
        lib = bundle / entry["library"]
        fields = parser_fields(node, harness.declared_fields(lib, entry["plugin"]))

        def run(poison, timing=None):
            return harness.run_plan(lib, entry["plugin"], fields, plan, inputs, poison, timing=timing)

        return plan, run

    def check(plan, contexts) -> str:
        for spec, c in zip(plan.outputs * len(contexts), compare_contexts(plan.outputs, contexts, refs)):
            if not c.ok:
                return f"wrong output {spec.name}: max abs err {c.max_abs:.3g}"
        return ""

    def time_one(harness: Harness, entry: dict) -> tuple[float, str]:
        """(median µs, what is wrong with its outputs: checked for DLight's default only)."""
        plan, run = runner(harness, entry)
        probe = TimingRequest(1, 3, flush_l2=True)
        outputs = run(POISONS[0], probe)
        timing = TimingRequest(*_timing_shape(statistics.median(probe.samples_us)), flush_l2=True)
        run(POISONS[0], timing)
        return statistics.median(timing.samples_us), check(plan, outputs) if entry["config"] is None else ""

    def check_one(harness: Harness, entry: dict) -> str:
        plan, run = runner(harness, entry)
        return next((b for b in (check(plan, run(p)) for p in POISONS) if b), "")

    def failed(_entry: dict, reason: str) -> tuple[None, str]:
        return None, reason[:300]

    # Pass 1: every candidate timed; only DLight's default (the untuned baseline) is checked here.
    timed: list[tuple[Record, dict]] = []
    for entry, (us, bad) in zip(runnable, run_isolated(runnable, setup, time_one, failed, in_process=not isolate)):
        if us is None or bad:
            out.append(record(entry, ok=False, us=None, error=bad))
            continue
        baseline = entry["config"] is None
        r = record(entry, ok=baseline, us=us, poisons=int(baseline), error="" if baseline else UNCHECKED)
        timed.append((r, entry))
        out.append(r)
    # Pass 2: from the fastest, candidates are checked under both poisons until FINALISTS have passed; only those
    # may win. Checking is what costs time (outputs of 10^8 elements), so slower candidates stay unchecked.
    queue = sorted(timed, key=lambda t: t[0].us)
    passed = 0
    while passed < FINALISTS and queue:
        batch, queue = queue[: FINALISTS - passed], queue[FINALISTS - passed :]
        verdicts = run_isolated(
            [e for _r, e in batch], setup, check_one, lambda e, why: why[:300], in_process=not isolate
        )
        for (r, _e), bad in zip(batch, verdicts):
            r.ok, r.poisons, r.error = (not bad), 0 if bad else len(POISONS), bad
            passed += not bad
    if progress:
        for r in out:
            progress(r)
    # Candidates with the same kernels as a measured one share its result.
    by_label = {r.label: r for r in out}
    for e in mine:
        if "same_as" in e and e["same_as"] in by_label:
            src = by_label[e["same_as"]]
            out.append(record(e, ok=src.ok, us=src.us, error=src.error or f"same kernels as {src.label}"))
    return out


def _timing_shape(us: float) -> tuple[int, int]:
    """(calls per graph, replays) for a candidate taking `us` per call: CALLS_PER_GRAPH x REPLAYS, halved (calls
    first, replays down to 5) until the timing fits TIMING_BUDGET_US."""
    calls, replays = CALLS_PER_GRAPH, REPLAYS
    while calls * replays * us > TIMING_BUDGET_US and (calls > 1 or replays > 5):
        if calls > 1:
            calls = max(1, calls // 2)
        else:
            replays = max(5, replays // 2)
    return calls, replays


def reference(bundle: Path, model: onnx.ModelProto, inputs: list[np.ndarray], out_dtypes: list[str]) -> list:
    """The ONNX reference outputs; through the bundle's float32 twin (reference.onnx) when it has one."""
    from opforge.core import dtypes
    from opforge.verify.reference import reference_outputs

    twin = bundle / "reference.onnx"
    if not twin.is_file():
        return reference_outputs(model, inputs)[0]
    ref_model = onnx.load(str(twin))
    inits = {i.name for i in ref_model.graph.initializer}
    want = [vi for vi in ref_model.graph.input if vi.name not in inits]
    cast = [
        a.astype(dtypes.numpy_dtype(dtypes.from_onnx(vi.type.tensor_type.elem_type).name))
        for a, vi in zip(inputs, want)
    ]
    outs = reference_outputs(ref_model, cast)[0]
    return [o.astype(dtypes.numpy_dtype(d)) for o, d in zip(outs, out_dtypes)]


def measure_all(bundle: Path, progress=None) -> list[Record]:
    """Measure the bundle on every GPU of this host in parallel (one worker per GPU); writes measurements.json."""
    from opforge.runtime.gpu import gpu_count

    n = max(1, gpu_count())
    if n == 1:
        records = measure_bundle(bundle, progress=progress)
    else:
        procs = []
        for i in range(n):
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(i)}
            cmd = [sys.executable, "-m", "opforge.tune.measure", str(bundle), "--part", f"{i}/{n}"]
            procs.append(subprocess.Popen(cmd, env=env))
        for p in procs:
            p.wait()
        records = []
        for i in range(n):
            part = bundle / f"measurements-part{i}.json"
            if part.is_file():
                records += [Record(**d) for d in json.loads(part.read_text())]
    (bundle / "measurements.json").write_text(json.dumps([r.__dict__ for r in records], indent=1))
    return records


def main(argv: list[str]) -> int:
    bundle = Path(argv[0])
    if "--part" in argv:
        i, n = (int(x) for x in argv[argv.index("--part") + 1].split("/"))
        records = measure_bundle(bundle, (i, n))
        (bundle / f"measurements-part{i}.json").write_text(json.dumps([r.__dict__ for r in records], indent=1))
    else:
        measure_all(bundle, progress=lambda r: print(f"{r.label}: {r.us} µs ok={r.ok} {r.error}"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
