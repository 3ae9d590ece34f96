"""Plugin libraries on the CPU machine: the build, the rewritten model, and TensorRT's call sequence up to the
first CUDA call, driven by the harness through the real IPluginV3 interface.

The GPU part runs in scripts/check_plugins.py."""

import ctypes
import json

import numpy as np
import onnx
import pytest

from opforge import trt_parser
from opforge.core import expr
from opforge.core.fields import parser_fields
from opforge.core.kernel_plan import KernelPlan
from opforge.emit.onnx_rewrite import PLUGIN_DOMAIN
from opforge.examples.example_model import REJECTED_OP_TYPES
from opforge.verify.check import input_shapes
from opforge.verify.harness import Harness, HarnessError
from opforge.verify.inputs import make_inputs


def _run_cpu_sequence(result, entry, batch: int, field_override=None):
    out = result.out_dir
    manifest = json.loads(result.manifest.read_text())
    harness = Harness(out / manifest["harness"])
    plan = KernelPlan.load(out / entry["plan"])
    sub = onnx.load(str(out / entry["subgraph"]))
    node = next(n for n in onnx.load(str(result.model)).graph.node if n.name == entry["nodes"][0])
    fields = parser_fields(node, harness.declared_fields(out / entry["library"], entry["name"]))
    if field_override:
        fields = [field_override(f) for f in fields]
    shapes = input_shapes(plan, {d.name: batch for d in plan.dims})
    inputs = make_inputs(sub, shapes, np.random.default_rng())
    symbolic = [[not expr.is_constant(e) for e in spec.shape] for spec in plan.inputs]
    harness.run(
        out / entry["library"],
        entry["name"],
        fields,
        inputs,
        symbolic,
        [o.dtype for o in plan.outputs],
        plan.output_shapes(plan.bind_dims(shapes)),
        0xFF,
        execute=False,
    )
    return fields


def test_library_exports_entry_points_and_links_no_tensorrt(generated_cases):
    lib = ctypes.CDLL(str(generated_cases.libraries[0]))
    assert lib.getCreators and lib.setLoggerFinder
    import subprocess

    deps = subprocess.run(["ldd", str(generated_cases.libraries[0])], capture_output=True, text=True).stdout
    assert "nvinfer" not in deps


def test_every_plugin_passes_the_tensorrt_sequence_on_cpu(generated_cases):
    manifest = json.loads(generated_cases.manifest.read_text())
    assert len(manifest["plugins"]) == 24
    for entry in manifest["plugins"]:
        for batch in (1, 7):
            _run_cpu_sequence(generated_cases, entry, batch)


def test_a_field_that_differs_is_refused(generated_cases):
    manifest = json.loads(generated_cases.manifest.read_text())
    entry = next(e for e in manifest["plugins"] if e["op_type"] == "OneHot")

    def change_depth(f):
        name, ftype, data, length = f
        if name != "depth":
            return f
        return name, ftype, np.frombuffer(data, np.int32).copy().__add__(1).tobytes(), length

    with pytest.raises(HarnessError, match="createPlugin"):
        _run_cpu_sequence(generated_cases, entry, 1, change_depth)


def test_rewritten_model(generated_example):
    src = onnx.load(str(generated_example.out_dir.parent / "example.onnx"))
    out = onnx.load(str(generated_example.model))
    onnx.checker.check_model(out)
    replaced = {n.name for n in src.graph.node if n.op_type in REJECTED_OP_TYPES}
    plugin_of = json.loads(generated_example.manifest.read_text())["nodes"]
    assert set(plugin_of) == replaced
    # Everything else untouched, in order.
    assert [n for n in out.graph.node if n.domain != PLUGIN_DOMAIN] == [
        n for n in src.graph.node if n.name not in replaced
    ]
    for after in (n for n in out.graph.node if n.domain == PLUGIN_DOMAIN):
        members = [n for n in src.graph.node if plugin_of.get(n.name) == after.op_type]
        assert after.name == members[0].name  # a fused group's node is named after its first member
        assert after.op_type.startswith("_".join(m.op_type for m in members) + "_opf")
        assert set(after.output) <= {o for m in members for o in m.output}
    # The three bitwise nodes feed each other: one fused plugin.
    assert len(set(plugin_of.values())) == 3
    # Constant inputs became attributes: the plugin nodes read tensors only.
    inits = {t.name for t in out.graph.initializer}
    assert not any(i in inits for n in out.graph.node if n.domain == PLUGIN_DOMAIN for i in n.input)


def test_tensorrt_parser_sees_only_plugin_lookups(generated_example):
    src = onnx.load(str(generated_example.out_dir.parent / "example.onnx"))
    before = trt_parser.parse(src)
    assert {e.op_type for e in before.errors} == set(REJECTED_OP_TYPES)
    after = trt_parser.parse(onnx.load(str(generated_example.model)))
    plugin_names = {s.name for s in generated_example.plugins}
    assert after.errors and all(e.plugin_lookup for e in after.errors)
    assert {e.op_type for e in after.errors} == plugin_names


def test_example_plugins_pass_cpu_sequence_at_profile_sizes(generated_example):
    manifest = json.loads(generated_example.manifest.read_text())
    assert manifest["dynamic_batch"] == {"min": 1, "opt": 7, "max": 64}
    for entry in manifest["plugins"]:
        for batch in (1, 7, 64):
            _run_cpu_sequence(generated_example, entry, batch)


def test_tpat_api_and_library_per_plugin(tmp_path):
    import subprocess
    import sys

    from opforge import onnx2plugin
    from opforge.examples.example_model import example_model

    src = tmp_path / "model.onnx"
    onnx.save(example_model(), str(src))
    result = onnx2plugin(
        str(src),
        str(tmp_path / "out" / "model_trt.onnx"),
        node_types=["BitwiseAnd", "BitShift"],
        dynamic_bs=True,
        min_bs=1,
        opt_bs=8,
        max_bs=32,
    )
    assert result.model == tmp_path / "out" / "model_trt.onnx" and result.model.is_file()
    manifest = json.loads(result.manifest.read_text())
    assert manifest["output_model"] == "model_trt.onnx"
    assert manifest["dynamic_batch"] == {"min": 1, "opt": 8, "max": 32}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "opforge.cli",
            "generate",
            str(src),
            "-o",
            str(tmp_path / "per"),
            "-t",
            "BitwiseAnd,BitShift",
            "--library-per-plugin",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    libs = json.loads(proc.stdout)["libraries"]
    assert len(libs) == 2
    for lib in libs:
        assert ctypes.CDLL(lib).getCreators  # each library carries its own entry points


@pytest.mark.slow
def test_fp16_scatternd_add_plan_is_a_complete_cuda_file(tmp_path):
    """The fp16 ScatterND-add kernel calls a device helper (a __half2 atomic add): the plan's own source defines it,
    so its standalone fatbin builds as well as the plugin (generate failed on the fatbin before)."""
    from opforge.examples.onnx_build import single_node_model
    from opforge.generate import generate

    model = single_node_model(
        "ScatterND",
        [("data", "float16", [4, 8, 16, 32]), ("idx", "int64", [4, 6, 3]), ("upd", "float16", [4, 6, 32])],
        attrs={"reduction": "add"},
    )
    src = tmp_path / "snd.onnx"
    onnx.save(model, str(src))
    result = generate(src, tmp_path / "out", node_types=["ScatterND"])
    (spec,) = result.plugins
    assert "__device__ __forceinline__ void opf_atomic_add_half2" in spec.plan.cuda_source
    assert (tmp_path / "out" / "plans" / f"{spec.plan.key}.fatbin").stat().st_size > 0
