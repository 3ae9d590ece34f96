#!/usr/bin/env python3
"""Real-world corpus: ONNX models no one here wrote (shipped inside PyPI wheels), the same models after onnxruntime's
quantize_dynamic, a transformer block after onnxruntime's transformer optimizer, and ops of opsets newer than most
TensorRTs (built with onnx.helper where no shipped model has them; each row says which). `opforge auto` on each.

python scripts/realworld.py build BUNDLE     # CPU machine: pip download the pinned wheels, derive, opforge auto
python scripts/realworld.py run BUNDLE OUT   # GPU machine: every plugin through the harness -> OUT/realworld-h100.*

Environment: REALWORLD_CACHE (wheels and derived models; default ~/.cache/opforge-realworld), REALWORLD_ONLY
(comma-separated model names: build only those). The bundle keeps what the GPU side needs (plugin libraries, plans,
manifests, the harness, rewritten models with their large weights emptied) plus build.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import traceback
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

WHEELS = {"rapidocr-onnxruntime": "1.4.4", "silero-vad": "6.2.3", "ddddocr": "1.6.1"}

# name -> (wheel, member inside the wheel, --input-shapes); shipped models as they are.
SHIPPED = {
    "ppocrv4-det": ("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "x:1x3x320x320"),
    "ppocrv4-rec": ("rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "x:1x3x48x320"),
    "ppocr-cls": (
        "rapidocr-onnxruntime",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "x:1x3x48x192",
    ),
    "ddddocr-ocr": ("ddddocr", "ddddocr/common.onnx", "input1:1x1x64x256"),
    "ddddocr-ocr-old": ("ddddocr", "ddddocr/common_old.onnx", "input1:1x1x64x256"),
    "ddddocr-det": ("ddddocr", "ddddocr/common_det.onnx", ""),
    "silero-vad": ("silero-vad", "silero_vad/data/silero_vad.onnx", "input:1x512,state:2x1x128,sr:"),
    "silero-vad-op15": ("silero-vad", "silero_vad/data/silero_vad_16k_op15.onnx", "input:1x512,state:2x1x128,sr:"),
    "silero-vad-half": ("silero-vad", "silero_vad/data/silero_vad_half.onnx", "input:1x512,state:2x1x128"),
    "silero-vad-ifless": ("silero-vad", "silero_vad/data/silero_vad_op18_ifless.onnx", "input:1x512,sr:,state:2x1x128"),
}
# name -> the shipped model onnxruntime's quantize_dynamic (default settings) is applied to.
QUANTIZED = {
    "ppocr-cls-qdyn": "ppocr-cls",
    "ppocrv4-det-qdyn": "ppocrv4-det",
    "ppocrv4-rec-qdyn": "ppocrv4-rec",
    "ddddocr-det-qdyn": "ddddocr-det",
    "silero-vad-op15-qdyn": "silero-vad-op15",
}
# Built here with onnx.helper (no shipped model has them): name -> (builder, --input-shapes, note).
SYNTHETIC = {
    "ffn-encoder-ortopt": (
        "_ffn_encoder",
        "",
        "transformer FFN blocks built with onnx.helper, fused by "
        "onnxruntime.transformers.optimizer (SkipLayerNormalization, BiasGelu, ...)",
    ),
    "rmsnorm-opset23": ("_rms_norm", "", "RMSNormalization (opset 23), onnx.helper"),
    "rotary-opset23": ("_rotary", "", "RotaryEmbedding (opset 23), onnx.helper"),
    "attention-opset23": ("_attention", "", "Attention (opset 23), onnx.helper"),
    "col2im-opset18": ("_col2im", "", "Col2Im (opset 18), onnx.helper"),
}
# Ops whose output shape depends on the data: out of this corpus's scope (the lead's size-tensor work).
DATA_DEPENDENT = {"NonZero", "Unique", "NonMaxSuppression"}


def cache_dir() -> Path:
    return Path(os.environ.get("REALWORLD_CACHE", Path.home() / ".cache" / "opforge-realworld"))


def _wheel(package: str) -> Path:
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    version = WHEELS[package]
    stem = package.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", f"{package}=={version}", "-d", str(wheels)],
            check=True,
        )
        found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    return found[0]


def shipped_model(name: str) -> Path:
    package, member, _ = SHIPPED[name]
    path = cache_dir() / "models" / f"{name}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(_wheel(package)) as z:
            path.write_bytes(z.read(member))
    return path


def quantized_model(name: str) -> Path:
    """Constant nodes made initializers (paddle2onnx writes weights as Constant nodes, which quantize_dynamic
    cannot quantize statically and fails on for PP-OCRv4), then quantize_dynamic with its defaults."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import quantize_dynamic

    path = cache_dir() / "models" / f"{name}.onnx"
    if not path.is_file():
        m = onnx.load(str(shipped_model(QUANTIZED[name])))
        keep = []
        for n in m.graph.node:
            value = next((a.t for a in n.attribute if a.name == "value"), None) if n.op_type == "Constant" else None
            if value is None:
                keep.append(n)
            else:
                m.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(value), n.output[0]))
        del m.graph.node[:]
        m.graph.node.extend(keep)
        staged = path.with_suffix(".float.onnx")
        onnx.save(m, str(staged))
        here = Path.cwd()
        os.chdir(path.parent)  # quantize_dynamic leaves <uuid>.data scratch files in the working folder
        try:
            quantize_dynamic(str(staged), str(path))
        finally:
            os.chdir(here)
            for scratch in path.parent.glob("*-*-*-*-*.data"):
                scratch.unlink()
        staged.unlink()
    return path


def synthetic_model(name: str) -> Path:
    import onnx

    path = cache_dir() / "models" / f"{name}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(globals()[SYNTHETIC[name][0]](), str(path))
    return path


def _mk(nodes, inputs, outputs, inits=(), opset=23):
    from onnx import helper

    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _ffn_encoder():
    """Two FFN blocks of a BERT-like encoder (LayerNormalization after a residual Add; MatMul + bias + erf Gelu),
    then onnxruntime's transformer optimizer, which writes its com.microsoft fused ops."""
    import tempfile

    from onnx import TensorProto as T
    from onnx import helper, numpy_helper
    from onnxruntime.transformers.optimizer import optimize_model

    rng = np.random.default_rng(16)
    h, f = 64, 256

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes, inits, x = [], [], "x"
    for k in range(2):
        p = f"l{k}_"
        inits += [w(p + "w1", h, f), w(p + "b1", f), w(p + "w2", f, h), w(p + "b2", h), w(p + "g", h), w(p + "be", h)]
        inits += [
            numpy_helper.from_array(np.array(v, np.float32), p + n)
            for n, v in (("sqrt2", np.sqrt(2.0)), ("one", 1.0), ("half", 0.5))
        ]
        nodes += [
            helper.make_node("MatMul", [x, p + "w1"], [p + "mm1"]),
            helper.make_node("Add", [p + "mm1", p + "b1"], [p + "a1"]),
            helper.make_node("Div", [p + "a1", p + "sqrt2"], [p + "d"]),
            helper.make_node("Erf", [p + "d"], [p + "e"]),
            helper.make_node("Add", [p + "e", p + "one"], [p + "e1"]),
            helper.make_node("Mul", [p + "a1", p + "e1"], [p + "m"]),
            helper.make_node("Mul", [p + "m", p + "half"], [p + "gelu"]),
            helper.make_node("MatMul", [p + "gelu", p + "w2"], [p + "mm2"]),
            helper.make_node("Add", [p + "mm2", p + "b2"], [p + "a2"]),
            helper.make_node("Add", [p + "a2", x], [p + "res"]),
            helper.make_node("LayerNormalization", [p + "res", p + "g", p + "be"], [p + "out"], axis=-1, epsilon=1e-12),
        ]
        x = p + "out"
    m = _mk(
        nodes,
        [helper.make_tensor_value_info("x", T.FLOAT, [2, 16, h])],
        [helper.make_tensor_value_info(x, T.FLOAT, [2, 16, h])],
        inits,
        opset=17,
    )
    with tempfile.TemporaryDirectory() as d:
        import onnx

        onnx.save(m, f"{d}/m.onnx")
        opt = optimize_model(f"{d}/m.onnx", model_type="bert", num_heads=4, hidden_size=h, opt_level=0)
        return opt.model


def _rms_norm():
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    g = numpy_helper.from_array(np.linspace(0.5, 1.5, 64).astype(np.float32), "g")
    node = helper.make_node("RMSNormalization", ["x", "g"], ["y"], axis=-1, epsilon=1e-6, name="rms")
    return _mk(
        [node],
        [helper.make_tensor_value_info("x", T.FLOAT, [2, 16, 64])],
        [helper.make_tensor_value_info("y", T.FLOAT, [2, 16, 64])],
        [g],
    )


def _rotary():
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    pos = np.arange(32, dtype=np.float32)[:, None] / (10000 ** (np.arange(8, dtype=np.float32) / 8))
    inits = [numpy_helper.from_array(np.cos(pos), "cos"), numpy_helper.from_array(np.sin(pos), "sin")]
    node = helper.make_node("RotaryEmbedding", ["x", "cos", "sin", "pos"], ["y"], name="rope")
    return _mk(
        [node],
        [
            helper.make_tensor_value_info("x", T.FLOAT, [2, 4, 16, 16]),
            helper.make_tensor_value_info("pos", T.INT64, [2, 16]),
        ],
        [helper.make_tensor_value_info("y", T.FLOAT, [2, 4, 16, 16])],
        inits,
    )


def _attention():
    from onnx import TensorProto as T
    from onnx import helper

    node = helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1, name="attn")
    shape = [2, 4, 16, 32]
    return _mk(
        [node],
        [helper.make_tensor_value_info(n, T.FLOAT, shape) for n in "qkv"],
        [helper.make_tensor_value_info("y", T.FLOAT, shape)],
    )


def _col2im():
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array([10, 12], np.int64), "image"),
        numpy_helper.from_array(np.array([3, 3], np.int64), "block"),
    ]
    node = helper.make_node("Col2Im", ["x", "image", "block"], ["y"], pads=[1, 1, 1, 1], name="col2im")
    return _mk(
        [node],
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 2 * 9, 120])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, 2, 10, 12])],
        inits,
        opset=18,
    )


def corpus() -> list[dict]:
    rows = []
    for name, (package, member, shapes) in SHIPPED.items():
        rows.append(
            {
                "model": name,
                "source": f"{package}=={WHEELS[package]}:{member}",
                "shapes": shapes,
                "kind": "shipped",
                "path": lambda n=name: shipped_model(n),
            }
        )
    for name, base in QUANTIZED.items():
        package, member, shapes = SHIPPED[base]
        rows.append(
            {
                "model": name,
                "source": f"{package}=={WHEELS[package]}:{member} + onnxruntime quantize_dynamic",
                "shapes": shapes,
                "kind": "derived",
                "path": lambda n=name: quantized_model(n),
            }
        )
    for name, (_, shapes, note) in SYNTHETIC.items():
        rows.append(
            {
                "model": name,
                "source": f"synthetic: {note}",
                "shapes": shapes,
                "kind": "synthetic",
                "path": lambda n=name: synthetic_model(n),
            }
        )
    return rows


def _slim(out: Path) -> None:
    """Keep what the GPU side needs: drop the named copy of the model, empty the large weights of the rewritten
    model (the harness reads only its plugin nodes' attributes)."""
    import onnx

    for p in out.glob("*.named.onnx"):
        p.unlink()
    for p in out.glob("*.opforge.onnx"):
        m = onnx.load(str(p), load_external_data=False)
        for t in m.graph.initializer:
            if len(t.raw_data) > 4096:
                t.ClearField("raw_data")
            for field in ("float_data", "int64_data", "int32_data", "double_data"):
                if len(getattr(t, field)) > 1024:
                    t.ClearField(field)
        p.write_bytes(m.SerializeToString())


def summarize_auto(result: dict) -> dict:
    insp = result["inspect"]
    rejected = insp["rejected"]
    by_op = Counter(r["op_type"] for r in rejected)
    lowered = [r for r in rejected if r["plugin"]]
    unsupported: dict[str, dict] = {}
    for r in rejected:
        if not r["plugin"]:
            u = unsupported.setdefault(r["op_type"], {"nodes": 0, "why": r["plugin_note"][:240]})
            u["nodes"] += 1
    after = result.get("after") or {}
    plugin_nodes = sum(len(p["nodes"]) for p in result["plugins"])
    return {
        "nodes": insp["nodes"],
        "rejected": len(rejected),
        "rejected_by_op": dict(by_op),
        "rejected_eligible": sum(1 for r in rejected if r["op_type"] not in DATA_DEPENDENT),
        "lowered": len(lowered),
        "plugins": len(result["plugins"]),
        "plugin_nodes": plugin_nodes,
        "unsupported": unsupported,
        "model_errors": [m["note"] for m in insp.get("model_errors", [])],
        "parser_accepts_after": result.get("ok", not rejected),
        "remaining": [f"{e.get('node') or '(model)'} ({e.get('op_type', '')})" for e in after.get("other_errors", [])],
    }


def build(bundle: Path) -> None:
    from opforge.auto import auto
    from opforge.extract.subgraph import parse_shape_arg
    from opforge.verify.results import bundle_commit

    only = set(filter(None, os.environ.get("REALWORLD_ONLY", "").split(",")))
    bundle.mkdir(parents=True, exist_ok=True)
    record = bundle / "build.json"
    rows = json.loads(record.read_text())["rows"] if record.is_file() else []
    done = {r["model"] for r in rows}
    for entry in corpus():
        name = entry["model"]
        if (only and name not in only) or name in done:
            continue
        row = {k: entry[k] for k in ("model", "source", "kind", "shapes")}
        out = bundle / "models" / name
        t0 = time.perf_counter()
        try:
            path = entry["path"]()
            row["size_mb"] = round(path.stat().st_size / 1e6, 2)
            shapes = parse_shape_arg(entry["shapes"]) if entry["shapes"] else None
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            print(f"== {name}: auto", flush=True)
            result = auto(path, out, input_shapes=shapes, verify="never", progress=lambda m: None)
            row.update(summarize_auto(result))
            row["folder"] = f"models/{name}" if result["plugins"] else None
            _slim(out)
        except Exception as e:  # a model opforge fails on is a result too
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}" if str(e) else type(e).__name__
            row["traceback"] = traceback.format_exc()[-1500:]
            row["folder"] = None
        row["auto_s"] = round(time.perf_counter() - t0, 1)
        print(
            json.dumps({k: row.get(k) for k in ("model", "rejected", "lowered", "plugins", "auto_s", "error")}),
            flush=True,
        )
        rows.append(row)
        record.write_text(json.dumps({"commit": bundle_commit(), "rows": rows}, indent=1))
    record.write_text(json.dumps({"commit": bundle_commit(), "rows": rows}, indent=1))


def run(bundle: Path, out: Path) -> int:
    from opforge.runtime.gpu import gpu_name
    from opforge.verify.plugins import verify_folder
    from opforge.verify.results import run_metadata, write_results

    info = json.loads((bundle / "build.json").read_text())
    device = gpu_name()  # asked in a child process: the cases run in forked workers (runtime.isolated)
    rows = info["rows"]
    for row in rows:
        if not row.get("folder"):
            row["verified_plugin_nodes"] = 0
            continue
        try:
            checks = verify_folder(bundle / row["folder"])
        except Exception as e:
            row["verify_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            checks = []
        row["plugins_verified"] = sum(c["ok"] for c in checks)
        row["plugins_failed"] = [
            {"plugin": c["plugin"], "error": c.get("error", "")[:200]} for c in checks if not c["ok"]
        ]
        row["verified_plugin_nodes"] = sum(len(c["nodes"]) for c in checks if c["ok"])
        print(row["model"], row["plugins_verified"], "of", len(checks), flush=True)
    summary = _summary(rows)
    meta = run_metadata(
        device,
        {
            "opforge_commit": info.get("commit", "?"),
            "executor": "plugin libraries through the opforge harness (verify_folder)",
        },
    )
    write_results(out, "realworld-h100", meta, rows, summary, markdown(rows))
    print(json.dumps(summary))
    return 0


def _summary(rows: list[dict]) -> dict:
    return {
        "models": len(rows),
        "models_parser_rejects": sum(1 for r in rows if r.get("rejected") or r.get("model_errors")),
        "rejected_nodes": sum(r.get("rejected", 0) for r in rows),
        "rejected_eligible_nodes": sum(r.get("rejected_eligible", 0) for r in rows),
        "lowered_nodes": sum(r.get("lowered", 0) for r in rows),
        "plugin_nodes": sum(r.get("plugin_nodes", 0) for r in rows),
        "verified_plugin_nodes": sum(r.get("verified_plugin_nodes", 0) for r in rows),
        "models_parser_accepts_after": sum(1 for r in rows if r.get("parser_accepts_after")),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | source | nodes | rejected | lowered | plugins | verified nodes | parser accepts after | "
        "auto (s) | stays unsupported (why) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        why = "; ".join(f"{op} x{u['nodes']}: {u['why'][:90]}" for op, u in r.get("unsupported", {}).items())
        why += "; ".join(r.get("model_errors", []))[:200]
        if r.get("error"):
            why = f"auto failed: {r['error'][:150]}"
        lines.append(
            f"| {r['model']} | {r['source']} | {r.get('nodes', '-')} | {r.get('rejected', '-')} | "
            f"{r.get('lowered', '-')} | {r.get('plugins', '-')} | {r.get('verified_plugin_nodes', '-')} | "
            f"{r.get('parser_accepts_after', '-')} | {r.get('auto_s', '-')} | {why.replace('|', '/') or '-'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    from opforge.verify.results import two_phase_main

    sys.exit(two_phase_main(__doc__, build, run))
