#!/usr/bin/env python3
"""opforge's plugin libraries in TensorRT 11.4's own plugin registry (the lean runtime wheel), not opforge's harness.

For the example model, the kernel cases and the benchmark's models, each built twice (TensorRT 10.14 headers, and
TensorRT 11.x headers with --headers-11): every library is loaded with IPluginRegistry::loadLibrary, and every
plugin node of the rewritten model is created (kBUILD and kRUNTIME) from fields made as TensorRT's ONNX parser makes
them (opforge.core.fields.parser_fields). Per library, one field is contradicted: creation must be refused, and the
plugin's error message must reach the application's logger (a Python trt.ILogger given to trt.Runtime; the runtime
needs a GPU, so on a machine without one that column is "no runtime").

  python scripts/trt_lean.py build BUNDLE [--headers-11 DIR]   # CPU machine with TVM: generate + build libraries
  python scripts/trt_lean.py run BUNDLE OUT                      # GPU machine: writes OUT/trt-lean-h100.{json,md}

`run` needs only numpy, onnx and the wheels tensorrt-lean-cu13-libs/-bindings==11.4.0.106. Each library is loaded
in its own process (`one` below): two builds of one model register the same plugin names, which a registry refuses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

NOT_LOWERABLE = {"nonzero"}
OPSET = 20
CONTRADICTION_TEXT = "opforge-contradiction"


# ---- build (CPU machine, TVM) ------------------------------------------------------------------------------------
def _models() -> dict[str, tuple]:
    """name -> (model, generate keyword arguments) for the example, the kernel cases and the benchmark."""
    from opforge.bench.suite import cases as bench_cases
    from opforge.examples.example_model import REJECTED_OP_TYPES, example_model
    from opforge.examples.kernel_cases import CASES
    from opforge.examples.merge import merge_models
    from opforge.generate import DynamicBatch

    out: dict[str, tuple] = {
        "example": (example_model(), {"node_types": list(REJECTED_OP_TYPES), "dynamic_batch": DynamicBatch(1, 7, 64)})
    }
    models = {c.name: c.build() for c in CASES if c.name not in NOT_LOWERABLE}
    cases = merge_models(models, OPSET, name="cases")
    out["cases"] = (cases, {"node_names": [n.name for n in cases.graph.node]})
    # One library per benchmark case: a case generate() cannot build (fp16 ScatterND add: its plan's standalone
    # fatbin lacks the half2 atomic helper) is reported as such instead of failing the others.
    for c in bench_cases():
        model = c.build(c.dtype)
        out[f"bench-{c.name}-{c.dtype}"] = (model, {"node_names": [n.name for n in model.graph.node]})
    return out


def build(bundle: Path, headers_11: Path | None) -> int:
    import onnx

    from opforge.build.trt_headers import trt_headers_version, trt_include_dir
    from opforge.core.errors import OpforgeError
    from opforge.generate import generate
    from opforge.verify.results import bundle_commit

    header_sets = {"trt10": None}
    if headers_11 is not None:
        header_sets["trt11"] = headers_11
    info: dict = {"commit": bundle_commit(), "builds": {}, "failed": {}}
    models = _models()
    saved = os.environ.get("TENSORRT_INCLUDE_DIR")
    try:
        for tag, include in header_sets.items():
            if include is None:
                os.environ.pop("TENSORRT_INCLUDE_DIR", None)
            else:
                os.environ["TENSORRT_INCLUDE_DIR"] = str(include)
            version = ".".join(map(str, trt_headers_version(trt_include_dir())))
            for name, (model, kwargs) in models.items():
                folder = bundle / tag / name
                folder.mkdir(parents=True, exist_ok=True)
                src = bundle / f"{name}.onnx"
                onnx.save(model, str(src))
                t0 = time.perf_counter()
                try:
                    r = generate(src, folder, **kwargs)
                except OpforgeError as e:
                    info["failed"][f"{tag}/{name}"] = str(e).splitlines()[0]
                    print(f"{tag}/{name}: generate failed: {info['failed'][f'{tag}/{name}']}", flush=True)
                    continue
                info["builds"][f"{tag}/{name}"] = {
                    "headers": version,
                    "model": str(r.model.relative_to(bundle)),
                    "libraries": [str(p.relative_to(bundle)) for p in r.libraries],
                    "generate_s": round(time.perf_counter() - t0, 1),
                }
                print(f"{tag}/{name}: TensorRT {version} headers, {len(r.plugins)} plugins", flush=True)
    finally:
        if saved is None:
            os.environ.pop("TENSORRT_INCLUDE_DIR", None)
        else:
            os.environ["TENSORRT_INCLUDE_DIR"] = saved
    (bundle / "bundle.json").write_text(json.dumps(info, indent=1))
    return 0


# ---- one library in TensorRT's registry (own process) -----------------------------------------------------------
def plugin_field(trt, name: str, ftype: str, data: bytes, keep: list):
    """A trt.PluginField holding what TensorRT's parser would pass (opforge.core.fields.parser_field). The bindings
    do not keep the numpy array alive (a freed 3 KB array was reused before createPlugin read it): `keep` does."""
    import numpy as np

    dtype, trt_type = {
        "kCHAR": (np.int8, trt.PluginFieldType.CHAR),
        "kINT32": (np.int32, trt.PluginFieldType.INT32),
        "kFLOAT32": (np.float32, trt.PluginFieldType.FLOAT32),
    }[ftype]
    values = np.frombuffer(data, dtype=dtype).copy()
    keep.append(values)
    return trt.PluginField(name, values, trt_type)


def contradiction(field: tuple[str, str, bytes, int]) -> tuple[str, str, bytes, int]:
    """The same field with a value the plugin was not generated for (same type, as the parser would pass it)."""
    import numpy as np

    name, ftype, data, length = field
    if ftype == "kCHAR":
        return name, ftype, CONTRADICTION_TEXT.encode() + b"\0", len(CONTRADICTION_TEXT)
    dtype = np.int32 if ftype == "kINT32" else np.float32
    values = np.frombuffer(data, dtype=dtype).copy() if length else np.zeros(1, dtype=dtype)
    values[0] += 1
    return name, ftype, values.tobytes(), int(values.size)


def registry_rows(trt, library: Path, model_path: Path, logger=None) -> tuple[list[dict], dict]:
    """Load `library` into TensorRT's registry and create every plugin node of the rewritten model (kBUILD and
    kRUNTIME) from parser-made fields; then contradict one field of one plugin. Returns (rows, library summary)."""
    import onnx

    from opforge.core.fields import parser_fields

    registry = trt.get_plugin_registry()
    handle = registry.load_library(str(library))
    summary: dict = {"library": str(library), "loaded": handle is not None}
    rows: list[dict] = []
    if handle is None:
        return rows, summary
    model = onnx.load(str(model_path))
    seen: set[str] = set()
    contradicted = None
    keep: list = []  # the fields' arrays, alive until the plugins are created
    for node in model.graph.node:
        if node.domain != "opforge" or node.op_type in seen:
            continue
        seen.add(node.op_type)
        row: dict = {"plugin": node.op_type, "node": node.name}
        creator = registry.get_creator(node.op_type, "1", "")
        row["found"] = creator is not None
        if creator is not None:
            declared = [(f.name, str(f.type)) for f in creator.field_names]
            fields = parser_fields(node, declared)
            row["fields"] = [f"{n}:{t}[{length}]" for n, t, _, length in fields]
            for phase in ("BUILD", "RUNTIME"):
                fc = trt.PluginFieldCollection([plugin_field(trt, n, t, d, keep) for n, t, d, _ in fields])
                plugin = creator.create_plugin(node.name, fc, getattr(trt.TensorRTPhase, phase))
                row[f"created_{phase.lower()}"] = plugin is not None
            if contradicted is None and fields:
                bad = contradiction(fields[0])
                fc = trt.PluginFieldCollection([plugin_field(trt, bad[0], bad[1], bad[2], keep)])
                try:
                    refused = creator.create_plugin(node.name, fc, trt.TensorRTPhase.BUILD) is None
                except Exception:  # the bindings may raise where C++ returned null
                    refused = True
                contradicted = {"plugin": node.op_type, "field": bad[0], "refused": refused}
        row["created"] = bool(row.get("created_build") and row.get("created_runtime"))
        rows.append(row)
    if contradicted is not None and logger is not None:
        needle = f"{contradicted['plugin']} (node"
        contradicted["logged"] = any(needle in m and contradicted["field"] in m for _, m in logger.messages)
    summary["contradiction"] = contradicted
    return rows, summary


def _logger_class(trt):
    class Collect(trt.ILogger):
        """Keeps every message TensorRT (and our plugins, through it) logs."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity, msg) -> None:
            self.messages.append((str(severity), msg))

    return Collect


def one(library: Path, model: Path) -> int:
    """Child process: print one JSON object {rows, summary} for one library."""
    import tensorrt_lean_bindings as trt

    logger = _logger_class(trt)()
    runtime_error = None
    try:
        runtime = trt.Runtime(logger)  # keeps TensorRT's logger finder pointed at `logger`
        if runtime is None:
            runtime_error = "trt.Runtime returned None"
    except Exception as e:  # no GPU: CUDA initialisation fails
        runtime, runtime_error = None, str(e)
    if not runtime_error and any("CUDA initialization failure" in m for _, m in logger.messages):
        runtime_error = "CUDA initialization failure (no GPU)"
    rows, summary = registry_rows(trt, library, model, logger)
    summary["runtime"] = runtime_error or "ok"
    summary["trt_version"] = getattr(trt, "__version__", "?")
    if summary.get("contradiction") and runtime_error:
        summary["contradiction"]["logged"] = "no runtime"
    print(json.dumps({"rows": rows, "summary": summary}), flush=True)
    # A trt.Runtime whose CUDA initialisation failed (no GPU) crashes when destroyed (TensorRT 11.4 lean): leave
    # without tearing it down. The plugins were created and destroyed above.
    os._exit(0)


# ---- run (GPU machine) --------------------------------------------------------------------------------------------
def run(bundle: Path, out: Path) -> int:
    from opforge.verify.results import run_metadata, write_results

    info = json.loads((bundle / "bundle.json").read_text())
    rows, libraries = [], []
    for key, build_info in info["builds"].items():
        name = key.split("/")[1]
        for lib in build_info["libraries"]:
            proc = subprocess.run(
                [sys.executable, __file__, "one", str(bundle / lib), str(bundle / build_info["model"])],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0 or not proc.stdout.strip():
                err = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
                libraries.append({"build": key, "headers": build_info["headers"], "library": lib, "error": err})
                print(f"{key}: FAILED {err}", flush=True)
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            libraries.append({"build": key, "headers": build_info["headers"], **result["summary"], "library": lib})
            for r in result["rows"]:
                rows.append({"build": key, "headers": build_info["headers"], "model": name, **r})
            c = result["summary"].get("contradiction") or {}
            print(
                f"{key}: {sum(r['created'] for r in result['rows'])}/{len(result['rows'])} created; contradiction "
                f"refused={c.get('refused')} logged={c.get('logged')}; runtime={result['summary'].get('runtime')}",
                flush=True,
            )
    device = _device_name()
    meta = run_metadata(
        device,
        {"opforge_commit": info["commit"], "executor": "TensorRT lean registry (IPluginRegistry::loadLibrary)"},
    )
    contradictions = [lib.get("contradiction") or {} for lib in libraries]
    summary = {
        "plugins": len(rows),
        "created": sum(r["created"] for r in rows),
        "libraries": len(libraries),
        "libraries_loaded": sum(bool(lib.get("loaded")) for lib in libraries),
        "contradictions": sum(bool(c) for c in contradictions),
        "contradictions_refused": sum(c.get("refused") is True for c in contradictions),
        "contradictions_logged": sum(c.get("logged") is True for c in contradictions),
        "generate_failed": len(info.get("failed", {})),
    }
    lines = ["| build | headers | plugin | fields | created (BUILD, RUNTIME) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['build']} | {r['headers']} | {r['plugin']} | {', '.join(r.get('fields', [])) or '-'} | "
            f"{r.get('created_build')}, {r.get('created_runtime')} |"
        )
    lines += ["", "| build | headers | loaded | runtime | contradicted field | refused | logged |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for lib in libraries:
        c = lib.get("contradiction") or {}
        lines.append(
            f"| {lib['build']} | {lib['headers']} | {lib.get('loaded', lib.get('error'))} | "
            f"{lib.get('runtime', '-')} | "
            f"{c.get('plugin', '-')}.{c.get('field', '-')} | {c.get('refused')} | {c.get('logged')} |"
        )
    lines += ["", *(f"- generate failed, {k}: {v}" for k, v in info.get("failed", {}).items())]
    write_results(out, "trt-lean-h100", meta, rows, summary, "\n".join(lines))
    # The per-library results (load, runtime, contradiction) next to the per-plugin rows in the JSON.
    path = out / "trt-lean-h100.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "libraries": libraries}, indent=1))
    print(json.dumps(summary))
    # Libraries whose plugins have no field (e.g. ScatterND) have nothing to contradict.
    with_field = sum(bool(c) for c in contradictions)
    ok = summary["created"] == summary["plugins"] and summary["contradictions_refused"] == with_field
    return 0 if ok else 1


def _device_name() -> str:
    try:
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        proc = subprocess.run(query, capture_output=True, text=True)
        names = proc.stdout.strip().splitlines() if proc.returncode == 0 else []
        return names[0] if names else "no GPU"
    except OSError:
        return "no GPU"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("bundle", type=Path)
    b.add_argument("--headers-11", type=Path, default=None, help="a TensorRT 11.x include folder (NvInferVersion.h)")
    r = sub.add_parser("run")
    r.add_argument("bundle", type=Path)
    r.add_argument("out", type=Path)
    o = sub.add_parser("one")
    o.add_argument("library", type=Path)
    o.add_argument("model", type=Path)
    a = ap.parse_args()
    if a.cmd == "build":
        return build(a.bundle, a.headers_11)
    if a.cmd == "one":
        return one(a.library, a.model)
    return run(a.bundle, a.out)


if __name__ == "__main__":
    sys.exit(main())
