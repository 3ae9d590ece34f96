"""opforge's own lowering layer on ONNX's conformance cases and the benchmark's shapes (CPU only): decompositions
of ops TVM lacks, nested function bodies, Resize normalisation, the kernels opforge shapes itself (parallel
ScatterND, fused GatherND, int32 indexing, row-vector Resize), max/min reductions from +-inf, and the guard on
DLight's GEMV rule."""

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from opforge.bench import suite
from opforge.core import expr
from opforge.extract.fold import expand_functions, fold_graph
from opforge.extract.subgraph import extract_nodes
from opforge.lower.onnx_rewrites import prepare_for_tvm
from opforge.testing.conformance import case_subgraph, load_cases
from opforge.verify.compare import compare

DECOMPOSED = [
    "test_adagrad",
    "test_adagrad_multiple",
    "test_adam",
    "test_adam_multiple",
    "test_momentum",
    "test_nesterov_momentum",
    "test_momentum_multiple",
    "test_ai_onnx_ml_binarizer",
    "test_ai_onnx_ml_array_feature_extractor",
    "test_reduce_max_bool_inputs",
    "test_reduce_max_empty_set_bool",
    "test_reduce_min_bool_inputs",
    "test_l1normalization_axis_0",
    "test_l2normalization_axis_0",  # a zero norm
    "test_lpnormalization_default",
    "test_pow_types_float32_int64",
    "test_pow_types_int32_float32",
    "test_pow_types_int64_int64",
    "test_onehot_negative_indices",
    "test_onehot_with_negative_axis",
]
RESIZE_NORMALISED = [
    "test_resize_upsample_scales_nearest_axes_2_3",
    "test_resize_upsample_scales_nearest_axes_3_2",
    "test_resize_tf_crop_and_resize_axes_2_3",
    "test_resize_tf_crop_and_resize_axes_3_2",
    "test_resize_upsample_sizes_nearest_not_larger",
    "test_resize_upsample_sizes_nearest_not_smaller",
    "test_resize_downsample_sizes_nearest_not_larger",
    "test_resize_downsample_sizes_nearest_not_smaller",
]


def _reference_matches_expected(case, model: onnx.ModelProto) -> None:
    """The rewritten model, run by ONNX's reference evaluator on the case's inputs, gives the case's outputs."""
    by_name = {i.name: v for i, v in zip(case.model.graph.input, case.inputs)}
    inits = {t.name for t in model.graph.initializer}
    feeds = {i.name: by_name[i.name] for i in model.graph.input if i.name not in inits}
    outs = ReferenceEvaluator(model).run(None, feeds)
    assert len(outs) == len(case.outputs)
    for got, want in zip(outs, case.outputs):
        c = compare(np.asarray(got).astype(want.dtype), want, want.dtype.name)
        assert c.ok, f"{case.name}: max abs err {c.max_abs}"


@pytest.mark.parametrize("name", DECOMPOSED)
def test_decompositions_compute_the_op(name):
    (case,) = load_cases({name})
    m = prepare_for_tvm(case.model)
    assert case.model.graph.node[0] not in m.graph.node  # the node itself is gone
    _reference_matches_expected(case, m)


@pytest.mark.parametrize("name", RESIZE_NORMALISED)
def test_resize_axes_and_aspect_policy_become_full_rank(name):
    (case,) = load_cases({name})
    sub, _ = case_subgraph(case)
    m = prepare_for_tvm(fold_graph(sub.model))
    (node,) = m.graph.node
    assert {a.name for a in node.attribute}.isdisjoint({"axes", "keep_aspect_ratio_policy"})
    _reference_matches_expected(case, m)


def test_nested_function_bodies_expand_fully():
    """SwiGLU's body uses Swish, itself a function op: both levels are inlined, and the result still computes
    SwiGLU."""
    (case,) = load_cases({"test_swiglu"})
    sub, _ = case_subgraph(case)
    m = expand_functions(sub.model, lambda n: True)
    assert {n.op_type for n in m.graph.node}.isdisjoint({"SwiGLU", "Swish"})
    _reference_matches_expected(case, m)


# -- kernels opforge shapes itself ------------------------------------------------------------------------------------
def _plan(case_name: str, config=None):
    from opforge.lower.tvm_lower import lower_subgraph

    case = next(c for c in suite.cases() if c.name == case_name)
    model = case.model()
    return lower_subgraph(extract_nodes(model, list(model.graph.node))[0], config=config)


@pytest.mark.parametrize("reduction", ["update", "add"])
def test_scatternd_scatters_every_slice_in_parallel(reduction):
    """TVM's own ScatterND loops over the 19200 index tuples in one block; opforge's covers tuples x slice
    elements with its grid (and adds with atomics)."""
    plan = _plan(f"scatternd_{reduction}_32x128x128x256_idx32x600x3_float32")
    threads = [expr.evaluate(launch.grid[0], {}) * expr.evaluate(launch.block[0], {}) for launch in plan.launches]
    n_idx, slice_len, lanes = 32 * 600, 256, 4
    assert max(threads) >= n_idx * slice_len // lanes
    assert ("atomicAdd" in plan.cuda_source) == (reduction == "add")


def test_gathernd_is_one_kernel():
    plan = _plan("gathernd_1x128x128x224_idx1x600x3_float32")
    assert len(plan.launches) == 1  # index normalisation fused into the gather


def test_static_resize_indexes_in_int32():
    plan = _plan("resize_nearest_32x32x44x50_to_176x200_float16")
    body = plan.cuda_source[plan.cuda_source.index("__global__ void __launch_bounds__") :]
    assert "int64_t" not in body.split("{", 1)[1]


def test_fp16_scatternd_add_uses_packed_atomics():
    plan = _plan("scatternd_add_32x128x128x256_idx32x600x3_float16")
    assert "opf_atomic_add_half2(" in plan.cuda_source


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_resize_is_one_row_vector_kernel(mode, dtype):
    """opforge's Resize: one kernel, a shared-memory width table, 16-byte stores."""
    plan = _plan(f"resize_{mode}_32x32x44x50_to_176x200_{dtype}")
    (launch,) = plan.launches
    assert "resize2d" in launch.kernel
    vector = "uint4" if dtype == "float16" else "float4"
    assert "__shared__" in plan.cuda_source and f"*({vector}*)(out_buf_ptr" in plan.cuda_source


@pytest.mark.parametrize("rows", [2, 4])
def test_resize_rows_per_thread_follow_the_tuned_config(rows):
    """A tuned per_thread gives each thread that many output rows: a grid that many times smaller, one 16-byte
    store per row, and column reuse's saturated tap weights read once for all of them."""
    from opforge.core.schedule import ScheduleConfig

    name = "resize_linear_32x32x44x50_to_176x200_float16"
    one, many = _plan(name, ScheduleConfig(256, 1, "strided")), _plan(name, ScheduleConfig(256, rows, "strided"))
    grid = [expr.evaluate(p.launches[0].grid[0], {}) for p in (one, many)]
    assert grid[0] == rows * grid[1]
    for plan, n in ((one, 1), (many, rows)):
        assert plan.cuda_source.count("*(uint4*)(out_buf_ptr") == n
        assert plan.cuda_source.count("__saturatef(") == 8 * 3  # 8 columns x (4 window taps - 1)


def _fold(e) -> float:
    """Evaluates a constant TIR expression the way CUDA does (float32 arithmetic, truncating int casts)."""
    import math

    import tvm
    from tvm import tirx

    from opforge.lower.tir_text import dtype_of

    f32 = np.float32
    if isinstance(e, (tirx.IntImm, tirx.FloatImm)):
        return f32(e.value) if "float" in dtype_of(e) else int(e.value)
    if isinstance(e, tirx.Cast):
        v = _fold(e.value)
        return f32(v) if "float" in dtype_of(e) else int(v)
    if isinstance(e, tvm.ir.Call):
        fn = {"floor": math.floor, "ceil": math.ceil, "round": round}[e.op.name.split(".")[-1]]
        return f32(fn(_fold(e.args[0])))
    if isinstance(e, tirx.Select):
        return _fold(e.true_value) if _fold(e.condition) else _fold(e.false_value)
    ops = {tirx.Add: np.add, tirx.Sub: np.subtract, tirx.Mul: np.multiply, tirx.Div: np.divide}
    ops |= {tirx.Min: min, tirx.Max: max, tirx.FloorMod: lambda a, b: a % b, tirx.FloorDiv: lambda a, b: a // b}
    ops |= {tirx.LT: lambda a, b: a < b, tirx.GE: lambda a, b: a >= b, tirx.And: lambda a, b: a and b}
    return ops[type(e)](_fold(e.a), _fold(e.b))


@pytest.mark.parametrize(
    "mode,rounding",
    [
        ("half_pixel", "round_prefer_floor"),
        ("half_pixel", "round_prefer_ceil"),
        ("asymmetric", "floor"),
        ("align_corners", "ceil"),
        ("pytorch_half_pixel", "round_prefer_floor"),
    ],
)
@pytest.mark.parametrize("in_len,out_len", [(2, 7), (4, 3), (5, 10), (12, 200), (3, 1)])
def test_resize_tables_match_onnx(mode, rounding, in_len, out_len):
    """The source column (nearest) and coordinate (linear) opforge's Resize tables hold, against ONNX's reference
    resizing arange(in_len) to out_len."""
    from tvm import tirx

    from opforge.lower.kernels import resize

    for method in ("nearest", "linear"):
        x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 1, in_len])
        y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
        sizes = onnx.numpy_helper.from_array(np.array([1, 1, 1, out_len], np.int64), "sizes")
        node = onnx.helper.make_node(
            "Resize",
            ["x", "", "", "sizes"],
            ["y"],
            mode=method,
            coordinate_transformation_mode=mode,
            nearest_mode=rounding,
        )
        g = onnx.helper.make_graph([node], "g", [x], [y], [sizes])
        m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 19)])
        want = ReferenceEvaluator(m).run(None, {"x": np.arange(in_len, dtype=np.float32)[None, None, None]})[0]
        got = []
        for j in range(out_len):
            x_in = resize.source_coordinate(tirx.const(j, "int32"), in_len, out_len, mode)
            if method == "nearest":
                got.append(_fold(resize._nearest(x_in, in_len, rounding)))
            else:
                i0, i1, w = (_fold(e) for e in resize._linear(x_in, in_len))
                got.append(i0 + w * (i1 - i0))
        np.testing.assert_allclose(np.array(got), want.ravel(), atol=1e-5, err_msg=f"{method} {mode}")
    for vec in (2, 4, 8):
        # Column reuse: a thread loads columns first..first+taps-1 of its chunk (repeating the last input column)
        # and picks tap r of each output from them, as the kernel does.
        taps = resize.chunk_taps(in_len, out_len, mode, vec)
        got = []
        for j in range(out_len):
            first, rw = resize.chunk_entry(tirx.const(j, "int32"), vec, taps, in_len, out_len, mode)
            first = resize.chunk_entry(tirx.const(j - j % vec, "int32"), vec, taps, in_len, out_len, mode)[0]
            first, rw = _fold(first), _fold(rw)
            r = int(np.floor(rw))
            assert 0 <= r < taps, (vec, j, r, taps)
            column = [min(first + q, in_len - 1) for q in range(taps)] + [0]
            got.append(column[r] + (rw - r) * ((column[r + 1] - column[r]) if r + 1 < taps else 0))
        np.testing.assert_allclose(np.array(got), want.ravel(), atol=1e-5, err_msg=f"reuse vec={vec} {mode}")


def _reduce_on_cpu(x: np.ndarray, kind: str, axis: list[int] | None = (1,)) -> np.ndarray:
    import tvm
    from tvm import relax

    from opforge.lower.kernels import reductions

    bb = relax.BlockBuilder()
    v = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [v]):
        with bb.dataflow():
            out = bb.emit_output(getattr(relax.op, kind)(v, axis=None if axis is None else list(axis)))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps({f"relax.{kind}": reductions.legalize(kind)})(bb.get())
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("kind", ["max", "min"])
def test_float_max_min_start_from_infinity(kind):
    """A row that is all -inf (max) or +inf (min) reduces to that infinity, as ONNX's Attention body needs; TVM's
    own reduction starts from the largest finite value and returns -3.4e38 there."""
    rng = np.random.default_rng()
    x = rng.standard_normal((3, 5)).astype(np.float32)
    x[1] = -np.inf if kind == "max" else np.inf
    got = _reduce_on_cpu(x, kind)
    np.testing.assert_array_equal(got, getattr(np, kind)(x, axis=1))


def test_gemv_rule_declines_a_depthwise_convolution():
    """DLight's GEMV mis-schedules out[n, f] = sum_r x[n, f, r] * w[f, r] (causal_conv_with_state_decode_step)."""
    from tvm import te

    from opforge.lower.spatial_rule import _vector_skips_inner_spatial

    x = te.placeholder((2, 4, 4), "float32", name="x")
    w = te.placeholder((4, 4), "float32", name="w")
    r = te.reduce_axis((0, 4), name="r")
    conv = te.compute((2, 4), lambda n, f: te.sum(x[n, f, r] * w[f, r], axis=r), name="conv")
    v = te.placeholder((4,), "float32", name="v")
    gemv = te.compute((2, 4), lambda n, f: te.sum(x[n, f, r] * v[r], axis=r), name="gemv")
    assert not _vector_skips_inner_spatial(te.create_prim_func([x, w, conv]))
    assert _vector_skips_inner_spatial(te.create_prim_func([x, v, gemv]))


@pytest.mark.parametrize("kind", ["max", "min"])
def test_float_max_min_axes_as_relax_means_them(kind):
    """axis=None reduces every axis; an empty axis list reduces none (Relax's max(x, axis=[]) is x)."""
    x = np.random.default_rng().standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_array_equal(_reduce_on_cpu(x, kind, None), getattr(np, kind)(x))
    np.testing.assert_array_equal(_reduce_on_cpu(x, kind, []), x)


def test_bfloat16_infinity_compiles(tmp_path):
    """TVM prints a bfloat16 infinity as `inff`; the plan's source defines it, and nvcc accepts it."""
    from opforge.build.nvcc import compile_fatbin
    from opforge.lower.tvm_lower import lower_subgraph
    from opforge.testing.conformance import Case

    vi = onnx.helper.make_tensor_value_info
    bf16 = onnx.TensorProto.BFLOAT16
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("ReduceMax", ["x"], ["y"], axes=[1], keepdims=0)],  # its init is -inf
        "g",
        [vi("x", bf16, [4, 6])],
        [vi("y", bf16, [4])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    from opforge.core.dtypes import numpy_dtype

    x = np.random.default_rng(3).standard_normal((4, 6)).astype(numpy_dtype("bfloat16"))
    case = Case("reduce_max_bf16", "ReduceMax", model, [x], [x.max(axis=1)])
    plan = lower_subgraph(case_subgraph(case)[0])
    assert "-__int_as_float(0x7f800000)" in plan.cuda_source and "inff" not in plan.cuda_source
    src = tmp_path / "k.cu"
    src.write_text(plan.cuda_source)
    assert compile_fatbin(src, tmp_path / "k.fatbin").stat().st_size > 0


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_floor_mod_is_numpy_mod(dtype):
    """ONNX Mod with fmod=0 on floats against NumPy's mod (ONNX's reference), with broadcasting: infinite and zero
    divisors and signed zeros included, where TVM's x - floor(x / y) * y gives NaN for an infinite y."""
    import tvm
    from tvm import relax

    from opforge.lower.kernels import float_mod

    rng = np.random.default_rng()
    edge = np.array([0.0, -0.0, -3.0, 3.0, -1.0, 1.0, np.inf, -np.inf, 1.0, np.nan, 5.5, -5.5])
    x = np.concatenate([edge, rng.uniform(-50, 50, 20)]).astype(dtype)
    y = np.concatenate([[-2, 2, np.inf, np.inf, -np.inf, -np.inf, 2, 2, 0.0, 2, -2.5, 2.5], rng.uniform(-9, 9, 20)])
    y = y.astype(dtype)
    bb = relax.BlockBuilder()
    vx, vy = relax.Var("x", relax.TensorType((2, 32), dtype)), relax.Var("y", relax.TensorType((32,), dtype))
    with bb.function("main", [vx, vy]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.floor_mod(vx, vy))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps({"relax.floor_mod": float_mod.legalize()})(bb.get())
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    xs = np.stack([x, -x])
    got = vm["main"](tvm.runtime.tensor(xs), tvm.runtime.tensor(y)).numpy()
    with np.errstate(all="ignore"):
        want = np.mod(xs, y)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


def _scatter_elements_model(dshape, ishape, axis: int, reduction: str, elem: int = 1):
    node = onnx.helper.make_node("ScatterElements", ["d", "i", "u"], ["y"], axis=axis, reduction=reduction)
    vi = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node], "g", [vi("d", elem, dshape), vi("i", 7, ishape), vi("u", elem, ishape)], [vi("y", elem, dshape)]
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])


@pytest.mark.parametrize("reduction", ["none", "add"])
@pytest.mark.parametrize(("dshape", "ishape", "launches"), [((512, 300), (512, 77), 1), ((512, 300), (500, 77), 2)])
def test_scatter_elements_scatters_every_update_in_parallel(reduction, dshape, ishape, launches):
    """TVM's ScatterElements visits the updates in one serial loop (2.6 ms for 4M updates on the H100); opforge's
    kernels scatter in parallel: one launch scattering each tile of rows in shared memory where indices span
    data's other dimensions, else a copy and a thread per update (atomics for "add")."""
    from opforge.lower.tvm_lower import lower_subgraph

    model = _scatter_elements_model(list(dshape), list(ishape), 1, reduction)
    plan = lower_subgraph(extract_nodes(model, list(model.graph.node))[0])
    assert len(plan.launches) == launches
    threads = [expr.evaluate(launch.grid[0], {}) * expr.evaluate(launch.block[0], {}) for launch in plan.launches]
    assert max(threads) >= (512 if launches == 1 else 500 * 77)
    assert ("atomic_add" in plan.cuda_source) == (reduction == "add")
    assert ("__shared__" in plan.cuda_source) == (launches == 1)


@pytest.mark.parametrize(
    ("dshape", "ishape", "axis", "elem"),
    [
        ((64, 300), (64, 77), 1, 1),  # rows: a tile of 32 fibers
        ((5, 7, 9), (5, 4, 9), 1, 1),  # fibers strided by 9, a tile spans two outer indices
        ((6, 50, 3, 4), (6, 20, 3, 4), 1, 10),  # float16
        ((40, 6, 5), (33, 6, 5), 0, 1),  # axis 0, fewer updates than positions
        ((8, 5000), (8, 900), -1, 1),  # 20 KB fibers: two to a tile
        ((3, 20000), (3, 100), 1, 1),  # fibers over the tile's shared memory: two launches
        ((6, 50), (4, 50), 1, 1),  # indices narrower than data off the axis: two launches
    ],
)
@pytest.mark.parametrize("reduction", ["none", "add"])
def test_scatter_elements_matches_onnx(dshape, ishape, axis, elem, reduction):
    """Both kernels (tiles of fibers in shared memory, or copy + scatter) run serially on the CPU against ONNX's
    reference, negative indices included; "none" scatters distinct targets (ONNX leaves duplicates undefined)."""
    from opforge.lower.cpu_run import run_on_cpu

    rng = np.random.default_rng(len(dshape) * 100 + ishape[axis])
    dt = np.float32 if elem == 1 else np.float16
    d, u = rng.standard_normal(dshape).astype(dt), rng.standard_normal(ishape).astype(dt)
    length = dshape[axis]
    if reduction == "none":
        fibers = list(ishape)
        fibers[axis] = length
        perm = np.argsort(rng.random(fibers), axis)
        i = np.take(perm, np.arange(ishape[axis]), axis=axis) - rng.integers(0, 2, ishape) * length
    else:
        i = rng.integers(-length, length, ishape)
    model = _scatter_elements_model(list(dshape), list(ishape), axis, reduction, elem)
    (want,) = ReferenceEvaluator(model).run(None, {"d": d, "i": i, "u": u})
    (got,) = run_on_cpu(extract_nodes(model, list(model.graph.node))[0], [d, i.astype(np.int64), u])
    np.testing.assert_allclose(
        got.astype(np.float64), want.astype(np.float64), rtol=0, atol=1e-2 if elem == 10 else 1e-5
    )


def _cumsum_model(shape, exclusive: int, reverse: int, elem: int = 1, axis: int = -1):
    vi = onnx.helper.make_tensor_value_info
    node = onnx.helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
    axis_t = onnx.numpy_helper.from_array(np.array(axis, np.int64), "axis")
    graph = onnx.helper.make_graph([node], "g", [vi("x", elem, shape)], [vi("y", elem, shape)], [axis_t])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 14)])


def test_cumsum_is_three_launches_with_warp_scans():
    """TVM's GPU scan takes about 28 launches for rows of 4096 (69 µs on the H100); opforge's is three: chunk sums,
    chunk offsets, chunk scans, the blocks scanning with warp shuffles."""
    from opforge.lower.tvm_lower import lower_subgraph

    model = _cumsum_model([64, 4096], 1, 1)
    plan = lower_subgraph(extract_nodes(model, list(model.graph.node))[0])
    assert len(plan.launches) == 3
    assert "__shfl_up_sync" in plan.cuda_source


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumsum_kernel_index_map_matches_onnx(exclusive, reverse):
    """The scan kernel's CPU form (the same index map: reversed positions, the prefix before an element) against
    ONNX's reference, on rows that are not a multiple of anything."""
    from opforge.lower.cpu_run import run_on_cpu
    from opforge.lower.kernels.scan import supported

    rng = np.random.default_rng(21 + 2 * exclusive + reverse)
    model = _cumsum_model([3, 5, 1001], exclusive, reverse)
    assert supported([3, 5, 1001], 2)
    x = rng.uniform(-2, 2, (3, 5, 1001)).astype(np.float32)
    (want,) = ReferenceEvaluator(model).run(None, {"x": x})
    (got,) = run_on_cpu(extract_nodes(model, list(model.graph.node))[0], [x])
    assert compare(got, want, "float32").ok


def _topk_model(shape, k: int, largest: int, elem: int = 1):
    vi = onnx.helper.make_tensor_value_info
    node = onnx.helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=-1, largest=largest, sorted=1)
    out = [*shape[:-1], k]
    k_t = onnx.numpy_helper.from_array(np.array([k], np.int64), "k")
    graph = onnx.helper.make_graph(
        [node], "g", [vi("x", elem, shape)], [vi("v", elem, out), vi("i", onnx.TensorProto.INT64, out)], [k_t]
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 11)])


def test_topk_of_long_rows_is_one_radix_select_launch():
    """TVM's TopK sorts each row in full (673 µs for 64 rows of 32768 on the H100); opforge's radix-selects each
    long row in one block: one launch, its warps counting digits with __match_any_sync."""
    from opforge.lower.tvm_lower import lower_subgraph

    model = _topk_model([64, 32768], 100, 1)
    plan = lower_subgraph(extract_nodes(model, list(model.graph.node))[0])
    assert len(plan.launches) == 1
    assert expr.evaluate(plan.launches[0].grid[0], {}) == 64
    assert "__match_any_sync" in plan.cuda_source and "opf_radix_pick(" in plan.cuda_source


@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize(("n", "k"), [(5000, 100), (700, 13), (4096, 1), (3000, 1024), (2049, 2049 // 2)])
def test_topk_matches_onnx(n, k, largest):
    """The kernel run as serial steps on the CPU against ONNX's reference, both paths (a row of at most 2048 sorted
    whole, a longer one radix-selected): values from few levels (many ties: the lower index first, resolved by the
    index digits of the key), -inf, +inf, -0.0 beside 0.0 among them."""
    from opforge.lower.cpu_run import run_on_cpu

    rng = np.random.default_rng(n + k + largest)
    x = rng.integers(-20, 20, (3, n)).astype(np.float32) / 4
    x[0, :7] = -np.inf
    x[1, -5:] = np.inf
    x[2, rng.choice(n, 40, replace=False)] = -0.0
    model = _topk_model([3, n], k, largest)
    want = ReferenceEvaluator(model).run(None, {"x": x})
    got = run_on_cpu(extract_nodes(model, list(model.graph.node))[0], [x])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize(
    ("elem", "dtype"),
    [(onnx.TensorProto.INT32, np.int32), (onnx.TensorProto.FLOAT16, np.float16), (onnx.TensorProto.UINT8, np.uint8)],
)
def test_topk_radix_keys_order_every_type(elem, dtype):
    """The radix select's order-preserving keys for integers (signed: the sign bit flipped), unsigned integers and
    half (widened to float32) against ONNX's reference, both directions, distinct and tied values."""
    from opforge.lower.cpu_run import run_on_cpu

    rng = np.random.default_rng(elem)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    lo, hi = (info.min, info.max) if info else (-60000, 60000)
    x = rng.integers(lo, hi, (2, 3000), endpoint=True).astype(dtype)
    x[1] = x[1] // 64 if info else np.round(x[1] / 5000)  # ties
    for largest in (0, 1):
        model = _topk_model([2, 3000], 37, largest, elem)
        want = ReferenceEvaluator(model).run(None, {"x": x})
        got = run_on_cpu(extract_nodes(model, list(model.graph.node))[0], [x])
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize(("shape", "k"), [([3, 3], 2), ([5, 13], 3), ([2, 70], 33)])
def test_topk_lowers_for_rows_shorter_than_a_warp(shape, k):
    """Rows of a few elements: the network's steps cover their pairs exactly (a guarded step made TVM refuse to
    place its barriers: "Cannot insert syncs inside condition")."""
    from opforge.lower.tvm_lower import lower_subgraph

    model = _topk_model(shape, k, 1)
    plan = lower_subgraph(extract_nodes(model, list(model.graph.node))[0])
    assert len(plan.launches) == 1


# CUDA's half and bfloat16 math functions (cuda_fp16.h, cuda_bf16.h) that a half-precision kernel may call.
CUDA_HALF_MATH = {"hsin", "hcos", "hexp", "hexp2", "hexp10", "hlog", "hlog2", "hlog10", "hsqrt", "hrsqrt", "hrcp"}
CUDA_HALF_MATH |= {"hceil", "hfloor", "htrunc", "hrint", "htanh", "habs"}


@pytest.mark.parametrize(
    "op", ["Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cosh", "Sinh", "Tan", "Erf", "Round", "IsNaN", "IsInf"]
)
def test_half_math_without_a_cuda_half_form_lowers_on_float32(op):
    """TVM's CUDA code for these on float16/bfloat16 called hatan, hcosh, hnearbyint... (nvcc: undefined) or left
    tirx.asin unresolved; widened (onnx_rewrites.NO_HALF_FORM), the kernels call only CUDA's half functions."""
    import re

    from opforge.lower.tvm_lower import lower_subgraph

    vi = onnx.helper.make_tensor_value_info
    for elem in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
        out = onnx.TensorProto.BOOL if op in ("IsNaN", "IsInf") else elem
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node(op, ["x"], ["y"])], "g", [vi("x", elem, [4, 8])], [vi("y", out, [4, 8])]
        )
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 22)])
        plan = lower_subgraph(extract_nodes(model, list(model.graph.node))[0])
        called = {c for c in re.findall(r"\b(h[a-z0-9]+)\(", plan.cuda_source) if not c.startswith(("half", "hadd"))}
        assert called <= CUDA_HALF_MATH, (op, elem, called - CUDA_HALF_MATH)


def test_cumsum_thread_prefix_is_its_neighbours_sum():
    """A thread's exclusive prefix within its warp is the left lane's inclusive sum (one more shuffle), not the
    warp's running sum minus its own: in float32, fl(1 + 1e8) - 1e8 = 0 lost the 1 before a large element."""
    from opforge.lower.tvm_lower import lower_subgraph

    model = _cumsum_model([64, 4096], 0, 0)
    plan = lower_subgraph(extract_nodes(model, list(model.graph.node))[0])
    scan_kernel = plan.cuda_source.split("cumsum_kernel_2(")[-1]
    assert scan_kernel.count(", 1, 32)") >= 3  # warp scan, lane prefix, warp-totals scan: each shuffles by 1


def test_scatter_elements_add_keeps_tvm_kernel_where_cuda_has_no_atomic():
    """CUDA has no atomicAdd for 8/16-bit or signed 64-bit integers: such adds keep TVM's serial kernel."""
    from opforge.lower.tvm_lower import lower_subgraph

    vi = onnx.helper.make_tensor_value_info
    node = onnx.helper.make_node("ScatterElements", ["d", "i", "u"], ["y"], axis=0, reduction="add")
    i64 = onnx.TensorProto.INT64
    graph = onnx.helper.make_graph(
        [node], "g", [vi("d", i64, [64, 8]), vi("i", i64, [32, 8]), vi("u", i64, [32, 8])], [vi("y", i64, [64, 8])]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    plan = lower_subgraph(extract_nodes(model, list(model.graph.node))[0])
    assert "atomic" not in plan.cuda_source.lower()


def test_one_input_reduction_test_tells_a_sum_from_a_matmul():
    """mark_one_input_reductions re-marks only reductions that read one input per reduction block: a GEMM (two)
    keeps its pattern."""
    from tvm import te, topi

    from opforge.lower.fusion import _reads_one_input_per_reduction

    a, b = te.placeholder((8, 16), name="a"), te.placeholder((16, 4), name="b")
    assert not _reads_one_input_per_reduction(te.create_prim_func([a, b, topi.matmul(a, b)]))
    assert _reads_one_input_per_reduction(te.create_prim_func([a, topi.sum(a, axis=1)]))


def test_half_scatter_elements_add_accumulates_in_float32():
    """4096 fp16 updates into 5 elements (the fuzz case ScatterElements_006): accumulated in half, each add rounds
    (2.8% off on the H100); widened (onnx_rewrites.ACCUMULATING_REDUCTIONS) the sum is float32's rounded once."""
    from opforge.lower.cpu_run import run_on_cpu
    from opforge.lower.onnx_rewrites import widen_accumulations

    model = _scatter_elements_model([1, 5], [1, 4096], 1, "add", onnx.TensorProto.FLOAT16)
    assert "Cast" in [n.op_type for n in widen_accumulations(model).graph.node]
    rng = np.random.default_rng(6)
    d = rng.standard_normal((1, 5)).astype(np.float16)
    u = rng.uniform(0, 1, (1, 4096)).astype(np.float16)
    i = rng.integers(-5, 5, (1, 4096))
    want = d.astype(np.float32)
    np.add.at(want, (np.zeros_like(i), i % 5), u.astype(np.float32))
    (got,) = run_on_cpu(extract_nodes(model, list(model.graph.node))[0], [d, i, u])
    np.testing.assert_array_equal(got, want.astype(np.float16))
    none = _scatter_elements_model([1, 5], [1, 4096], 1, "none", onnx.TensorProto.FLOAT16)
    assert "Cast" not in [n.op_type for n in widen_accumulations(none).graph.node]
