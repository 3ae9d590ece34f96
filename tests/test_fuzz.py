"""The fuzzer's CI slice: seeded cases over every op type with a seed form, generated deterministically, valid
under ONNX's reference, lowered by opforge (a few through nvcc, slow), and checked numerically on the CPU with TVM
(llvm) for a fixed seeded sample. Failures name the case and its seed: `python scripts/fuzz.py replay` reruns it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

from opforge.testing import fuzz

SEED = 14


@pytest.fixture(scope="module")
def forms():
    return fuzz.seed_forms()


@pytest.fixture(scope="module")
def cases(forms):
    return fuzz.generate(SEED, 2, forms=forms)


def test_generation_is_deterministic_and_covers_the_ops(forms, cases):
    assert len(forms) >= 100
    assert len({c.op_type for c in cases}) >= 100
    again = fuzz.make_case(cases[0].op_type, 0, SEED, forms[cases[0].op_type])
    assert again.model.SerializeToString() == cases[0].model.SerializeToString()
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(again.inputs, cases[0].inputs))


def test_cases_are_mutated_and_recorded(cases):
    assert sum(bool(c.mutation.get("dims")) for c in cases) > len(cases) // 3
    assert sum(bool(c.mutation.get("dtypes")) for c in cases) > len(cases) // 10
    assert sum(bool(c.mutation.get("attributes")) for c in cases) > len(cases) // 10
    for c in cases:
        rec = c.record()
        assert rec["seed"][0] == SEED and rec["case"] == c.name
        assert all(x.size <= fuzz.MAX_ELEMENTS for x in c.inputs)


def test_run_side_imports_without_tvm():
    """The GPU side's modules (the fuzzer, the conformance runner and what they import) load in a fresh process
    where TVM cannot be imported."""
    code = (
        "import sys; sys.modules['tvm'] = None\n"
        "import opforge.testing.fuzz, opforge.testing.conformance, opforge.verify.harness, opforge.verify.compare\n"
        "assert 'tvm' not in {m.split('.')[0] for m, v in sys.modules.items() if v is not None}"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def sample(cases):
    rng = np.random.default_rng(SEED)
    return [cases[int(k)] for k in sorted(rng.choice(len(cases), size=min(300, len(cases)), replace=False))]


def test_slice_lowers(sample, tmp_path):
    """Every sampled case lowers, or fails with opforge's reason (a LoweringError), never a crash."""
    from opforge.core.errors import OpforgeError
    from opforge.plan.isolated import IsolatedPlanner
    from opforge.testing import conformance

    pytest.importorskip("tvm")
    lowered, refused = 0, []
    with IsolatedPlanner() as planner:  # TVM crashes on some generated nodes: the worker dies, not the test
        for c in sample:
            sub, _ = conformance.case_subgraph(c.as_case())
            try:
                planner.plan(sub, tmp_path)
                lowered += 1
            except OpforgeError as e:
                refused.append(f"{c.name}: {str(e)[:100]}")
    assert lowered >= 0.6 * len(sample), refused[:20]


KNOWN_CPU_DIVERGENCES: dict[str, str] = {}  # op type -> why (with the issue it is tracked in)


def test_cpu_check_on_a_seeded_sample(cases):
    """TVM (llvm) runs each case as opforge lowers it; every sampled case that runs must match ONNX's reference,
    or, where ONNX's reference is known to be the odd one out, match what a correct implementation computes (the
    explanation's alternative). Most of the sample must run (a lowering that errors on everything is no pass)."""
    pytest.importorskip("tvm")
    rng = np.random.default_rng(SEED + 1)
    picked = [cases[int(k)] for k in rng.choice(len(cases), size=min(60, len(cases)), replace=False)]
    wrong, ran = [], 0
    for c in picked:
        r = fuzz.cpu_check(c)
        ran += r["cpu_check"] in ("pass", "wrong")
        if r["cpu_check"] == "wrong" and c.op_type not in KNOWN_CPU_DIVERGENCES and not r.get("cpu_explained"):
            wrong.append(f"{c.name} seed={c.seed} {c.mutation} max_abs={r['cpu_max_abs_err']:.3g}")
    assert not wrong, "\n".join(wrong)
    assert ran >= 0.6 * len(picked), f"only {ran} of {len(picked)} sampled cases ran"


@pytest.mark.slow
def test_a_few_cases_build_as_plugins(tmp_path, cases):
    """nvcc on a handful of cases (one library), the fuzz bundle as the GPU side reads it."""
    import json

    picked = [c for c in cases if c.op_type in ("Add", "RoiAlign", "Softmax", "Gather")][:6]
    rows = fuzz.build(tmp_path, picked)
    assert sum(bool(r.get("built")) for r in rows) >= 4
    info = json.loads((tmp_path / fuzz.BUILD_RECORD).read_text())
    assert all("seed" in r and "mutation" in r for r in info["rows"])
    assert fuzz.load_case(tmp_path, picked[0].name).model.SerializeToString() == picked[0].model.SerializeToString()


@pytest.mark.slow
def test_tuned_build_lowers_each_subgraph_under_its_drawn_configuration(tmp_path, cases):
    """scripts/fuzz.py build --tuned: each subgraph's plan is the tuned one drawn for it (its producer names the
    configuration), not DLight's defaults."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("fuzz_script", Path(__file__).parents[1] / "scripts/fuzz.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    config_for, drawn = script._drawn_configs(seed=1)
    picked = [c for c in cases if c.op_type in ("Gemm", "Softmax")][:4]
    rows = fuzz.build(tmp_path, picked, config_for=config_for)
    assert sum(bool(r.get("built")) for r in rows) >= 2 and drawn
    producers = [json.loads(p.read_text())["producer"] for p in (tmp_path / "plans_tmp" / "plans").glob("*.json")]
    assert producers and all("opforge-tuned" in p for p in producers), producers
    assert {p.rsplit(" ", 1)[-1] for p in producers} <= set(drawn.values()), (producers, drawn)


def test_families_share_one_symbolic_node(cases):
    """Shape siblings keep the node (attributes, types, constants) and change only its free dims, consistently;
    the family's symbolic node names those dims, so the family builds one plugin run at several shapes."""
    families: dict[str, list] = {}
    for c in cases:
        if c.symbolic is not None:
            families.setdefault(c.family, []).append(c)
    assert len(families) > len({c.op_type for c in cases}) // 3
    for name, members in families.items():
        base = next(m for m in members if m.name == name)
        assert len({tuple(x.shape for x in m.inputs) for m in members}) >= 2  # one plugin, several shapes
        assert all(m.symbolic is base.symbolic for m in members)
        node = base.model.graph.node[0].SerializeToString()
        assert all(m.model.graph.node[0].SerializeToString() == node for m in members)
        symbolic = {d.dim_param for vi in base.symbolic.graph.input for d in vi.type.tensor_type.shape.dim}
        assert symbolic - {""}, name


def test_siblings_run_through_the_symbolic_lowering(cases):
    """A seeded sample of siblings, lowered from their family's symbolic node, matches ONNX's reference on TVM."""
    pytest.importorskip("tvm")
    sibs = [c for c in cases if c.mutation.get("sibling_of") and c.op_type in ("Add", "MatMul", "Softmax", "Gather")]
    assert sibs
    for c in sibs[:6]:
        assert fuzz.cpu_check(c)["cpu_check"] == "pass", (c.name, c.seed)


def test_roialign_grid_is_enumerated(cases):
    """The registry's fuzz grid for RoiAlign (spatial scales of FPN levels x both coordinate modes x avg/max x
    sampling ratios adaptive, 1, 2, 3) is generated in full, each point with its attributes set."""
    grid = [c for c in cases if c.op_type == "RoiAlign" and "grid" in c.mutation]
    points = {tuple(sorted(c.mutation["grid"].items())) for c in grid}
    assert len(points) == 5 * 2 * 2 * 4
    for c in grid:
        a = {x.name: x for x in c.model.graph.node[0].attribute}
        assert abs(a["spatial_scale"].f - c.mutation["grid"]["spatial_scale"]) < 1e-7
        assert a["sampling_ratio"].i == c.mutation["grid"]["sampling_ratio"]


def test_schema_defaults_no_seed_form_reaches_get_cases_of_their_own(forms, cases):
    """An optional attribute every seed form sets to a value other than the schema's default gets a case with the
    attribute left out: RoiAlign's forms all set sampling_ratio=2, and its default 0 (an adaptive grid, what
    Detectron2 exports) did not lower for the GPU until a generated case asked for it. The default case of
    sampling_ratio runs on the CPU and matches ONNX's reference."""
    assert "sampling_ratio" in fuzz.default_gaps(forms["RoiAlign"])
    assert fuzz.default_gaps(forms["Relu"]) == []  # nothing to leave out
    defaults = [c for c in cases if c.mutation.get("default")]
    by_op = {(c.op_type, c.mutation["default"]) for c in defaults}
    assert ("RoiAlign", "sampling_ratio") in by_op and ("Celu", "alpha") in by_op
    (ratio_case,) = [c for c in defaults if c.mutation["default"] == "sampling_ratio" and "_d" in c.name[-5:]]
    assert "sampling_ratio" not in {a.name for a in ratio_case.model.graph.node[0].attribute}
    assert fuzz.cpu_check(ratio_case)["cpu_check"] == "pass", ratio_case.name


# --- the wrong cases of the H100 run (results/fuzz-h100.json, run seed 1), regenerated by seed -----------------

H100_SEED = 1


def _h100_case(forms, name: str) -> fuzz.FuzzCase:
    op, k = name.rsplit("_", 1)
    case = fuzz.make_case(op, int(k), H100_SEED, forms[op])
    assert case is not None
    return case


def _assert_checks(case: fuzz.FuzzCase, explained: bool = False) -> None:
    """The case passes the TVM-llvm check, or (explained=True) its divergence has a known explanation and its
    result is the one that explanation says a correct implementation gives."""
    r = fuzz.cpu_check(case)
    assert r["cpu_check"] in ("pass", "wrong"), r
    if r["cpu_check"] == "wrong":
        assert explained and r.get("cpu_explained"), f"{case.name} seed={case.seed} {case.mutation} {r}"


def test_attribute_pairs_the_spec_forbids():
    """`pads` with auto_pad other than NOTSET is invalid ONNX (the schema's text); NOTSET with pads is fine."""

    def conv(**attributes):
        node = helper.make_node("Conv", ["x", "w"], ["y"], **attributes)
        return helper.make_model(helper.make_graph([node], "g", [], []), opset_imports=[helper.make_opsetid("", 22)])

    assert fuzz.spec_violation(conv(auto_pad="SAME_LOWER", pads=[1, 1, 1, 1]))
    assert fuzz.spec_violation(conv(auto_pad="NOTSET", pads=[1, 1, 1, 1])) is None
    assert fuzz.spec_violation(conv(auto_pad="VALID")) is None


@pytest.mark.parametrize("name", ["AveragePool_003", "Conv_001", "Conv_003", "LpPool_005", "MaxPool_004"])
def test_h100_padding_cases_are_valid_onnx_now(forms, name):
    """These were generated with pads and auto_pad together (no defined result); now they are valid and check."""
    pytest.importorskip("tvm")
    case = _h100_case(forms, name)
    assert fuzz.spec_violation(case.model) is None
    _assert_checks(case, explained=True)


def _pool_by_hand(op: str, x: np.ndarray, k: int, stride: int, dilation: int, mode: str) -> np.ndarray:
    """The 2-D pool over x (N, C, H, W) with ONNX's SAME_* padding, computed here from the spec's text alone
    (output ceil(in / stride); total padding (out - 1) * stride + (k - 1) * dilation + 1 - in, its odd pixel at
    the end for SAME_UPPER and at the start for SAME_LOWER): pads take no part in the max, the average
    (count_include_pad 0) or the L2 sum."""
    n = x.shape[2]
    out = -(-n // stride)
    total = max(0, (out - 1) * stride + (k - 1) * dilation + 1 - n)
    begin = total - total // 2 if mode == "SAME_LOWER" else total // 2
    y = np.empty((*x.shape[:2], out, out), np.float64)
    for oy in range(out):
        for ox in range(out):
            rows = [oy * stride - begin + t * dilation for t in range(k)]
            cols = [ox * stride - begin + t * dilation for t in range(k)]
            rows, cols = [r for r in rows if 0 <= r < n], [c for c in cols if 0 <= c < n]
            window = x[:, :, rows][:, :, :, cols].astype(np.float64)
            if op == "MaxPool":
                y[:, :, oy, ox] = window.max(axis=(2, 3))
            elif op == "AveragePool":
                y[:, :, oy, ox] = window.mean(axis=(2, 3))
            else:
                y[:, :, oy, ox] = np.sqrt((window**2).sum(axis=(2, 3)))
    return y


@pytest.mark.parametrize(
    ("op", "mode", "dilation", "stride", "size"),
    [
        ("AveragePool", "SAME_UPPER", 2, 2, 5),
        ("AveragePool", "SAME_UPPER", 2, 2, 6),  # odd total padding (3)
        ("AveragePool", "SAME_LOWER", 1, 2, 6),  # odd total padding (1)
        ("LpPool", "SAME_LOWER", 2, 1, 8),
        ("LpPool", "SAME_UPPER", 1, 2, 6),  # odd total padding (1)
        ("MaxPool", "SAME_LOWER", 1, 2, 5),
        ("MaxPool", "SAME_LOWER", 2, 2, 6),  # odd total padding (3)
    ],
)
def test_same_pools_get_the_spec_padding(op, mode, dilation, stride, size):
    """auto_pad SAME_* pools compute ONNX's specified padding (output ceil(in / stride), the dilated kernel, the
    odd pixel where the spec puts it), against a pool computed here from the spec's text (ONNX's reference is off
    for some of these forms: the fuzzer's explanation)."""
    pytest.importorskip("tvm")
    from onnx import TensorProto

    x = np.random.default_rng([7, size, dilation]).uniform(-2, 2, (1, 2, size, size)).astype(np.float32)
    node = helper.make_node(
        op, ["x"], ["y"], auto_pad=mode, kernel_shape=[3, 3], strides=[stride] * 2, dilations=[dilation] * 2
    )
    want = _pool_by_hand(op, x, 3, stride, dilation, mode).astype(np.float32)
    assert want.shape[2] == -(-size // stride)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(want.shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    case = fuzz.FuzzCase("same", op, [0], "", model, [x], [want])
    assert fuzz.cpu_check(case)["cpu_check"] == "pass"


@pytest.mark.parametrize("name", ["Scatter_001", "Scatter_003"])
def test_h100_scatter_cases_have_distinct_targets(forms, name):
    """Scatter (ScatterElements' deprecated alias) without a reduction: the H100 cases repeated a target (more
    indices along the axis than positions: the result depends on the write order); now every line's targets are
    distinct, whether the indices are drawn as an input or baked as a constant."""
    case = _h100_case(forms, name)
    node, g = case.model.graph.node[0], case.model.graph
    values = {
        **{vi.name: v for vi, v in zip(g.input, case.inputs)},
        **{t.name: onnx.numpy_helper.to_array(t) for t in g.initializer},
    }
    data, idx = values[node.input[0]], values[node.input[1]]
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0) % data.ndim
    lines = np.moveaxis(np.where(idx < 0, idx + data.shape[axis], idx), axis, -1).reshape(-1, idx.shape[axis])
    assert all(len(set(line.tolist())) == len(line) for line in lines), (case.seed, case.mutation)


def test_scatter_domain_refuses_shapes_that_must_repeat_a_target():
    from opforge.ops.base import NoValidInputs
    from opforge.verify.inputs import make_inputs

    for op, attributes in [("ScatterElements", {"axis": 1}), ("Scatter", {"axis": 1})]:
        node = helper.make_node(op, ["d", "i", "u"], ["y"], **attributes)
        graph = helper.make_graph(
            [node],
            "g",
            [
                helper.make_tensor_value_info("d", onnx.TensorProto.FLOAT, [1, 5]),
                helper.make_tensor_value_info("i", onnx.TensorProto.INT64, [1, 17]),
                helper.make_tensor_value_info("u", onnx.TensorProto.FLOAT, [1, 17]),
            ],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 5])],
        )
        model = helper.make_model(graph)
        with pytest.raises(NoValidInputs):
            make_inputs(model, [(1, 5), (1, 17), (1, 17)], np.random.default_rng(0))
        add = helper.make_node(op, ["d", "i", "u"], ["y"], reduction="add", **attributes) if op != "Scatter" else None
        if add is not None:  # with a reduction, repeated targets are defined
            graph.node[0].CopyFrom(add)
            make_inputs(helper.make_model(graph), [(1, 5), (1, 17), (1, 17)], np.random.default_rng(0))


@pytest.mark.parametrize("name", ["LpNormalization_004", "LpNormalization_005"])
def test_h100_l1_normalization_follows_the_spec(forms, name):
    """ONNX's reference divides by sum(x) for p=1 (the explanation); opforge by sum(|x|) as the spec and the
    conformance tests do: the case checks against that."""
    pytest.importorskip("tvm")
    case = _h100_case(forms, name)
    assert fuzz.explanation(case)
    node = case.model.graph.node[0]
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    x = case.inputs[0].astype(np.float64)
    assert (x < 0).any()
    spec = (x / np.abs(x).sum(axis=axis, keepdims=True)).astype(case.inputs[0].dtype)
    fixed = fuzz.FuzzCase(case.name, case.op_type, case.seed, case.form, case.model, case.inputs, [spec])
    assert fuzz.cpu_check(fixed)["cpu_check"] == "pass"


def test_h100_bfloat16_einsum_accumulates_in_float32(forms):
    """Einsum_005 (bf16 'bij,bjk->bik', K=129): TVM accumulated in bfloat16 (off by 1.25 on the CPU too); ONNX's
    reference and TensorRT accumulate in float32, and so does opforge now (widen_accumulations)."""
    pytest.importorskip("tvm")
    _assert_checks(_h100_case(forms, "Einsum_005"))


def test_h100_bfloat16_reduction_is_the_float32_sum(forms):
    """ReduceLogSum_004 (bf16, 1500 values): ONNX's reference sums in bfloat16 (log 1024 = 6.94 where the sum's
    log is 8.02). A half case's reference is now the node on float32 rounded once, which is the float64 sum's log
    here, and opforge's output matches it."""
    pytest.importorskip("tvm")
    case = _h100_case(forms, "ReduceLogSum_004")
    assert case.reference.endswith("(float32)")
    x = case.inputs[0].astype(np.float64)
    want = np.log(x.sum()).astype(case.outputs[0].dtype).reshape(case.outputs[0].shape)
    np.testing.assert_array_equal(case.outputs[0], want)
    feeds = {vi.name: v for vi, v in zip(case.model.graph.input, case.inputs)}
    faithful, _ = fuzz._faithful_reference(case.model, feeds)
    assert abs(float(faithful[0].astype(np.float64).ravel()[0]) - float(want.astype(np.float64).ravel()[0])) > 0.5
    assert fuzz.cpu_check(case)["cpu_check"] == "pass"


def test_half_accumulating_ops_are_widened_to_float32():
    from onnx import TensorProto

    from opforge.lower.onnx_rewrites import widen_accumulations

    vi = helper.make_tensor_value_info
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [vi("a", TensorProto.BFLOAT16, [2, 3]), vi("b", TensorProto.BFLOAT16, [3, 4])],
        [vi("y", TensorProto.BFLOAT16, [2, 4])],
    )
    wide = widen_accumulations(helper.make_model(graph))
    assert [n.op_type for n in wide.graph.node] == ["Cast", "Cast", "MatMul", "Cast"]
    assert wide.graph.node[-1].output[0] == "y" and helper.get_attribute_value(wide.graph.node[-1].attribute[0]) == (
        TensorProto.BFLOAT16
    )
    onnx.checker.check_model(wide, full_check=True)


def test_h100_float16_roialign_computes_coordinates_in_float32(forms):
    """RoiAlign_003 (fp16, max, half_pixel): the sample coordinates were computed in float16 (steps of 1/128 near
    8; off by 0.0078); ONNX computes them in float64, opforge's kernel now in float32."""
    pytest.importorskip("tvm")
    _assert_checks(_h100_case(forms, "RoiAlign_003"))


def test_h100_gemm_with_one_term_adds_the_bias_once(forms):
    """Gemm_004 (bf16, K = 1, beta 0.35): DLight's fallback merged the epilogue into the length-1 reduction, whose
    init became beta * C while the update added beta * C again (off by 0.59 on the H100; the CPU check does not
    schedule for the GPU). The CUDA plan now reads C in one place: the epilogue after the reduction."""
    pytest.importorskip("tvm")
    from opforge.lower.tvm_lower import lower_subgraph
    from opforge.testing import conformance

    case = _h100_case(forms, "Gemm_004")
    _assert_checks(case)
    sub, _ = conformance.case_subgraph(case.as_case())
    source = lower_subgraph(sub).cuda_source
    c = sub.model.graph.node[0].input[2]
    assert source.count(f"{c}_ptr[") == 1, source[-1500:]


@pytest.mark.parametrize(
    "name",
    [
        "NegativeLogLikelihoodLoss_014",  # bf16, ignore_index, mean: TVM summed the expanded body in bf16
        "NegativeLogLikelihoodLoss_016",  # bf16, class weights and ignore_index
        "SoftmaxCrossEntropyLoss_011",  # bf16, weights, ignore_index, sum over 19500 terms
        "InstanceNormalization_000",  # bf16 statistics
        "BatchNormalization_004",  # fp16 training statistics over 57k values (inf in fp16)
        "GridSample_006",  # fp16 sample coordinates
    ],
)
def test_h100_half_losses_and_normalizations_compute_in_float32(forms, name):
    """The H100 fuzz run's half-precision losses, normalizations and GridSample (wrong by up to 2440 in bf16):
    widened to float32 as a whole (before their function bodies are expanded), against the float32 reference."""
    pytest.importorskip("tvm")
    _assert_checks(_h100_case(forms, name))


def test_loss_targets_are_classes_or_ignore_index():
    """A target outside [0, C) is not a valid input (ONNX's reference indexes from the end, a kernel reads out of
    bounds): the registry's domain draws classes, and ignore_index about one time in eight."""
    from onnx import TensorProto

    from opforge.verify.inputs import make_inputs

    vi = helper.make_tensor_value_info
    node = helper.make_node("NegativeLogLikelihoodLoss", ["x", "t"], ["y"], ignore_index=-3, reduction="sum")
    graph = helper.make_graph(
        [node], "g", [vi("x", TensorProto.FLOAT, [64, 7, 5]), vi("t", TensorProto.INT64, [64, 5])], [vi("y", 1, [])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    _, t = make_inputs(model, [(64, 7, 5), (64, 5)], np.random.default_rng(11))
    classes = t[t != -3]
    assert classes.min() >= 0 and classes.max() < 7 and 0 < (t == -3).sum() < t.size // 3


def test_half_reference_is_the_float32_node_rounded():
    """A half case's reference: the node on float32 (inputs upcast exactly), rounded once to the output type;
    ONNX's reference on bfloat16 itself sums in bfloat16 and stops growing."""
    from onnx import TensorProto

    from opforge.core.dtypes import numpy_dtype

    vi = helper.make_tensor_value_info
    node = helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)
    graph = helper.make_graph([node], "g", [vi("x", TensorProto.BFLOAT16, [3000])], [vi("y", TensorProto.BFLOAT16, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.random.default_rng(5).uniform(1.5, 2.5, 3000).astype(numpy_dtype("bfloat16"))
    (out,), ref = fuzz.reference_outputs(model, {"x": x})
    assert ref == "onnx (float32)" and out.dtype == x.dtype
    assert float(out) == float(np.float32(x.astype(np.float64).sum()).astype(x.dtype))
    (faithful,), _ = fuzz._faithful_reference(model, {"x": x})
    assert abs(float(faithful) - float(out)) > 100


def test_grid_sample_cubic_border_difference_is_explained(forms):
    """GridSample_005 (cubic, border, out-of-range coordinates): ONNX's reference clamps the coordinate,
    onnxruntime and TVM clamp each tap; explained on the row, and opforge's output is onnxruntime's."""
    pytest.importorskip("tvm")
    case = _h100_case(forms, "GridSample_005")
    assert fuzz.explanation(case)
    feeds = {vi.name: v for vi, v in zip(case.model.graph.input, case.inputs)}
    wide_model, wide_feeds = fuzz._widened(case.model, feeds)
    theirs = fuzz._onnxruntime(wide_model or case.model, wide_feeds)
    ort = fuzz.FuzzCase(
        case.name,
        case.op_type,
        case.seed,
        case.form,
        case.model,
        case.inputs,
        [np.asarray(o).astype(r.dtype) for o, r in zip(theirs, case.outputs)],
    )
    assert fuzz.cpu_check(ort)["cpu_check"] == "pass"


def test_kernel_shape_ties_the_weight_dims():
    """A convolution weight's spatial dims restate kernel_shape (ONNX's shape inference does not check it): they
    keep their size, so no sibling contradicts its own attribute."""
    from onnx import TensorProto

    vi = helper.make_tensor_value_info
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[3, 3])
    graph = helper.make_graph(
        [node], "g", [vi("x", TensorProto.FLOAT, [1, 2, 5, 7]), vi("w", TensorProto.FLOAT, [2, 4, 3, 3])], []
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    assert 3 in fuzz._structural_sizes(model)


def test_normalization_scale_must_fit_the_normalized_shape():
    """A scale of X's full shape is broadcast by ONNX's reference but refused by TVM and by LayerNormalization's
    function body: not a valid input, so the fuzzer does not draw it (NoValidInputs)."""
    from onnx import TensorProto

    from opforge.ops.base import NoValidInputs
    from opforge.verify.inputs import make_inputs

    vi = helper.make_tensor_value_info
    for op in ("LayerNormalization", "RMSNormalization"):
        node = helper.make_node(op, ["x", "w"], ["y"], axis=2)
        graph = helper.make_graph(
            [node], "g", [vi("x", TensorProto.FLOAT, [2, 3, 4, 33]), vi("w", TensorProto.FLOAT, [2, 3, 4, 33][-1:])], []
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
        shapes = [(2, 3, 4, 33), (33,)]
        if op == "LayerNormalization":  # 33 elements against the normalized [4, 33]: its body needs 132 or 1
            with pytest.raises(NoValidInputs):
                make_inputs(model, shapes, np.random.default_rng(1))
        else:  # [33] broadcasts to the normalized [4, 33]
            make_inputs(model, shapes, np.random.default_rng(1))
        with pytest.raises(NoValidInputs):
            make_inputs(model, [(2, 3, 4, 33), (2, 3, 4, 33)], np.random.default_rng(1))


def test_nms_siblings_keep_four_coordinates_per_box():
    """NonMaxSuppression's boxes are [B, N, 4] by the spec (shape inference does not check it): a family whose box
    count is 4 varies the count, never the coordinates (SPEC_FIXED_SIZES; two siblings ran with 24 coordinates)."""
    from opforge.testing import fuzz

    cases = fuzz.generate(1, 24, ["NonMaxSuppression"])
    assert cases
    for c in cases:
        boxes, scores = c.inputs[0], c.inputs[1]
        assert boxes.shape[-1] == 4, (c.name, boxes.shape)
        assert scores.shape[-1] == boxes.shape[1], (c.name, scores.shape, boxes.shape)
