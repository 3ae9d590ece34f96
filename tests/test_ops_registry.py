"""The op registry (opforge.ops): one rule per op, the op table and docs/ops.md made from it, input domains that
ONNX's reference accepts, and the per-op lowerings checked numerically (TVM on the CPU, llvm target)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from opforge.ops import all_rules, kernel_overrides, module_of, rule_for
from opforge.ops.table import markdown, op_table
from opforge.verify.inputs import make_inputs

ROOT = Path(__file__).resolve().parent.parent


def test_op_table_lists_every_onnx_op_from_the_registry():
    proc = subprocess.run([sys.executable, "-m", "opforge", "ops", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) >= 150
    by_op = {(r["domain"], r["op_type"]): r for r in rows}
    # Ops with a rule show its file; the rest TVM's defaults.
    assert by_op[("", "Resize")]["registry"] == "src/opforge/ops/resize.py"
    assert by_op[("", "Resize")]["lowering"] == "kernel"
    assert by_op[("ai.onnx.ml", "Binarizer")]["lowering"] == "decompose"
    assert by_op[("", "Cos")]["registry"] is None and by_op[("", "Cos")]["lowering"] == "tvm"
    for (domain, op), rule in all_rules().items():
        assert (domain, op) in by_op, f"{op} has a rule but no row"
        assert Path(ROOT / by_op[(domain, op)]["registry"]).is_file()
        assert rule_for((domain, op)) is rule


def test_docs_ops_md_is_generated_from_the_registry():
    assert (ROOT / "docs" / "ops.md").read_text() == markdown(op_table()), "regenerate: opforge ops --markdown"


def test_every_kernel_the_registry_names_exists():
    import importlib

    for relax_op, ref in kernel_overrides().items():
        module, _, function = ref.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), f"{relax_op}: {ref}"


def test_an_op_without_a_rule_gets_tvm_defaults():
    rule = rule_for(("", "Cos"))
    assert rule.rewrite is None and rule.inputs is None and rule.lowering == "tvm"
    assert module_of("", "Cos") is None


def _model(op: str, inputs: list[tuple[str, int, list[int]]], out: list[tuple[str, int, list[int] | None]], **attrs):
    node = helper.make_node(op, [n for n, _, _ in inputs], [n for n, _, _ in out], name="n", **attrs)
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in out],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


F, I64 = TensorProto.FLOAT, TensorProto.INT64


def _roi_model(scale: float, mode: str, ctm: str) -> onnx.ModelProto:
    return _model(
        "RoiAlign",
        [("x", F, [2, 3, 16, 20]), ("rois", F, [9, 4]), ("idx", I64, [9])],
        [("y", F, [9, 3, 7, 7])],
        spatial_scale=scale,
        mode=mode,
        coordinate_transformation_mode=ctm,
        output_height=7,
        output_width=7,
        sampling_ratio=2,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roialign_inputs_are_valid_boxes(seed):
    m = _roi_model(0.25, "avg", "half_pixel")
    x, rois, idx = make_inputs(m, [(2, 3, 16, 20), (9, 4), (9,)], np.random.default_rng(seed))
    assert ((idx >= 0) & (idx < 2)).all()
    assert (rois[:, 2] >= rois[:, 0]).all() and (rois[:, 3] >= rois[:, 1]).all()
    assert rois[:, 2].max() <= 2 * 20 / 0.25  # image coordinates, not feature-map ones
    out = ReferenceEvaluator(m).run(None, {"x": x, "rois": rois, "idx": idx})[0]
    assert np.isfinite(out).all() and np.abs(out).max() > 0


@pytest.mark.parametrize(
    ("op", "inputs", "out", "attrs", "check"),
    [
        (
            "GatherND",
            [("d", F, [4, 5, 6]), ("i", I64, [7, 2])],
            [("y", F, [7, 6])],
            {},
            lambda v: (
                (v[1][:, 0] < 4).all()
                and (v[1][:, 0] >= -4).all()
                and (v[1][:, 1] < 5).all()
                and (v[1][:, 1] >= -5).all()
            ),
        ),
        (
            "ScatterND",
            [("d", F, [6, 5]), ("i", I64, [6, 1]), ("u", F, [6, 5])],
            [("y", F, [6, 5])],
            {},
            lambda v: len(np.unique(v[1])) == 6,
        ),
        (
            "ScatterElements",
            [("d", F, [4, 6]), ("i", I64, [4, 6]), ("u", F, [4, 6])],
            [("y", F, [4, 6])],
            {"axis": 1},
            lambda v: all(len(set(((r % 6) + 6) % 6)) == 6 for r in v[1]),
        ),
        ("Acosh", [("x", F, [64])], [("y", F, [64])], {}, lambda v: (v[0] > 1).all()),
        ("Asin", [("x", F, [64])], [("y", F, [64])], {}, lambda v: (np.abs(v[0]) < 1).all()),
        ("TopK", [("x", F, [8, 9]), ("k", I64, [1])], [("v", F, [8, 3]), ("i", I64, [8, 3])], {}, None),
    ],
)
def test_input_domains_satisfy_the_op(op, inputs, out, attrs, check):
    m = _model(op, inputs, out, **attrs)
    if op == "TopK":  # k is a constant
        m.graph.initializer.append(onnx.numpy_helper.from_array(np.array([3], np.int64), "k"))
        del m.graph.input[1]
        inputs = inputs[:1]
    rng = np.random.default_rng(7)
    values = make_inputs(m, [tuple(s) for _, _, s in inputs], rng)
    if check is not None:
        assert check(values)
    if op == "TopK":
        assert len(np.unique(values[0])) == values[0].size  # distinct: no ties
    outs = ReferenceEvaluator(m).run(None, {n: v for (n, _, _), v in zip(inputs, values)})
    assert all(np.isfinite(np.asarray(o, dtype=np.float64)).all() for o in outs)


@pytest.mark.slow
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25, 0.0625])
def test_roialign_avg_lowering_matches_onnx_at_any_scale(scale, ctm):
    """TVM (llvm, on the CPU) on the subgraph as opforge prepares it, against ONNX's reference. Without the
    registry's rewrite, half_pixel at scale 0.25 is off by up to ~1.3 on these inputs (TVM's (x - 0.5) * s)."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from opforge.lower.onnx_rewrites import prepare_for_tvm

    m = _roi_model(scale, "avg", ctm)
    ins = make_inputs(m, [(2, 3, 16, 20), (9, 4), (9,)], np.random.default_rng(3))
    ref = ReferenceEvaluator(m).run(None, dict(zip(["x", "rois", "idx"], ins)))[0]
    ex = tvm.compile(from_onnx(prepare_for_tvm(m), keep_params_in_input=False), target="llvm")
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](*[tvm.runtime.tensor(x) for x in ins]).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
