#!/usr/bin/env python3
"""Whole models on the GPU: `opforge verify OUT --inputs x.npz --json` runs the rewritten model node by node (plugin
nodes through the IPluginV3 harness, the other nodes through onnxruntime) against onnxruntime on the original model,
per graph output, and names the first diverging node (see opforge.verify.model).

Models (built on the CPU machine, each with its inputs as .npz, keys = graph input names):
- example: the built-in example (MatMul, Relu, Cast by onnxruntime; Compress, BitwiseAnd, BitwiseXor, BitwiseNot,
  BitShift as plugins; batch symbolic, run at 7);
- roialign: Conv -> Relu -> RoiAlign (spatial_scale 0.25, rois and batch indices as graph inputs, drawn from
  RoiAlign's input domain) -> Relu, with RoiAlign and the last Relu as plugins (a plugin feeding a plugin).

  python scripts/verify_model.py build .gpu_bundle/verify_model          # CPU machine: generate, inputs, CPU check
  python scripts/verify_model.py run .gpu_bundle/verify_model results    # GPU machine (no TVM): verify, write
                                                                         # results/verify-model-h100.{json,md}
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SEED = 14
MODELS = ("example", "roialign")
# The run phase runs the CLI with TVM made unimportable: it must need none of it.
_NO_TVM_CLI = 'import sys; sys.modules["tvm"] = None; from opforge.cli import main; sys.exit(main(sys.argv[1:]))'


def roialign_model():
    """Conv/Relu -> RoiAlign (spatial_scale 0.25, half_pixel) -> Relu; rois and batch indices are graph inputs."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    w = numpy_helper.from_array(rng.uniform(-0.5, 0.5, (8, 3, 3, 3)).astype(np.float32), "conv_w")
    b = numpy_helper.from_array(rng.uniform(-0.1, 0.1, 8).astype(np.float32), "conv_b")
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["features"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["features"], ["features_act"], name="conv_relu"),
        helper.make_node(
            "RoiAlign",
            ["features_act", "rois", "batch_indices"],
            ["pooled"],
            name="roi_align",
            spatial_scale=0.25,
            output_height=4,
            output_width=4,
            sampling_ratio=2,
            mode="avg",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("Relu", ["pooled"], ["pooled_act"], name="pooled_relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "roialign_chain",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, 16, 16]),
            helper.make_tensor_value_info("rois", TensorProto.FLOAT, [6, 4]),
            helper.make_tensor_value_info("batch_indices", TensorProto.INT64, [6]),
        ],
        [helper.make_tensor_value_info("pooled_act", TensorProto.FLOAT, [6, 8, 4, 4])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="opforge-verify-model")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build(bundle: Path) -> None:
    """Generate both folders, draw their inputs (seeded) into <model>.npz, and run the whole-model check with the
    plugins computed by onnxruntime on their subgraphs (the CPU stand-in), as the expected outcome."""
    import numpy as np
    import onnx

    from opforge.core.manifest import Manifest
    from opforge.examples.example_model import REJECTED_OP_TYPES, example_model
    from opforge.generate import DynamicBatch, generate
    from opforge.verify.model import random_inputs, subgraph_runner, verify_model
    from opforge.verify.results import bundle_commit

    bundle.mkdir(parents=True, exist_ok=True)
    specs = {
        "example": (example_model(), {"node_types": list(REJECTED_OP_TYPES), "dynamic_batch": DynamicBatch(1, 7, 64)}),
        "roialign": (roialign_model(), {"node_names": ["roi_align", "pooled_relu"]}),
    }
    info: dict = {"commit": bundle_commit(), "seed": SEED, "models": {}}
    for k, (name, (model, selection)) in enumerate(specs.items()):
        src = bundle / f"{name}.onnx"
        onnx.save(model, str(src))
        # One plugin per node (no fusion), so that a divergence is pinned to one node of the user's model.
        generate(src, bundle / name, **selection, progress=print, fuse=False)
        manifest = Manifest.load(bundle / name)
        feeds = random_inputs(model, np.random.default_rng(SEED + k), manifest=manifest)
        np.savez(bundle / f"{name}.npz", **feeds)
        cpu = verify_model(bundle / name, bundle / f"{name}.npz", runner=subgraph_runner())
        info["models"][name] = {
            "plugins": {n: p for n, p in manifest.nodes.items()},
            "nodes": [f"{n.name} ({n.op_type})" for n in model.graph.node],
            "inputs": {n: [list(v.shape), str(v.dtype)] for n, v in feeds.items()},
            "cpu_stand_in_ok": cpu["ok"],
        }
        print(f"{name}: plugins {sorted(manifest.nodes)}; CPU stand-in {'PASS' if cpu['ok'] else 'FAIL'}")
    (bundle / "bundle.json").write_text(json.dumps(info, indent=1))


def _device() -> str:
    try:
        from opforge.runtime.launcher import Context

        return Context(0).name
    except Exception as e:  # still write what the runs say
        return f"unknown ({type(e).__name__})"


def run(bundle: Path, out: Path) -> int:
    from opforge.verify.results import run_metadata, write_results

    info = json.loads((bundle / "bundle.json").read_text())
    rows = []
    for name in MODELS:
        cmd = [sys.executable, "-c", _NO_TVM_CLI, "verify", str(bundle / name), "--inputs", str(bundle / f"{name}.npz")]
        proc = subprocess.run([*cmd, "--json"], capture_output=True, text=True)
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            report = {"ok": False, "outputs": [], "error": (proc.stderr.strip() or proc.stdout.strip())[-2000:]}
        rows.append({"model": name, "exit_code": proc.returncode, **info["models"][name], "report": report})
        print(f"{name}: exit {proc.returncode} {'PASS' if report.get('ok') else 'FAIL'}", flush=True)
        if proc.stderr.strip():
            print(proc.stderr.strip()[-2000:], file=sys.stderr)
    summary = {
        "models": len(rows),
        "pass": sum(r["exit_code"] == 0 and bool(r["report"].get("ok")) for r in rows),
        "graph_outputs": sum(len(r["report"].get("outputs", [])) for r in rows),
        "plugin_nodes": sum(len(r["plugins"]) for r in rows),
    }
    lines = ["| model | graph output | shape | max abs err | max rel err | result |", "|---|---|---|---|---|---|"]
    for r in rows:
        for o in r["report"].get("outputs", []):
            if "max_abs_err" in o:
                errs, status = f"{o['max_abs_err']:.3g} | {o['max_rel_err']:.3g}", "PASS" if o["ok"] else "FAIL"
            else:
                errs, status = "- | -", f"FAIL: {o.get('error', '')}".replace("|", "/")
            lines.append(f"| {r['model']} | {o['name']} | {o.get('shape')} | {errs} | {status} |")
    lines += ["", "| model | plugins (node: plugin) | exit | first diverging node |", "|---|---|---|---|"]
    for r in rows:
        d = r["report"].get("first_divergence")
        first = "none" if not d else f"{d['node']} ({d['op_type']}) {d['output']}: {d.get('error') or d['max_abs_err']}"
        if "error" in r["report"]:
            first = r["report"]["error"].splitlines()[-1]
        plugins = ", ".join(f"{n}: {p}" for n, p in r["plugins"].items())
        lines.append(f"| {r['model']} | {plugins} | {r['exit_code']} | {first.replace('|', '/')} |")
    meta = run_metadata(
        _device(),
        {
            "opforge_commit": info["commit"],
            "executor": "opforge verify --inputs: plugin nodes through the harness (IPluginV3 call sequence), other "
            "nodes through onnxruntime (CPU EP); reference: onnxruntime on the original model",
        },
    )
    write_results(out, "verify-model-h100", meta, rows, summary, "\n".join(lines))
    print(json.dumps(summary))
    return 0 if summary["pass"] == summary["models"] else 1


if __name__ == "__main__":
    from opforge.verify.results import two_phase_main

    sys.exit(two_phase_main(__doc__, build, run))
