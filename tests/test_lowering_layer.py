"""opforge's own lowering layer on ONNX's conformance cases and the benchmark's shapes (CPU only): decompositions
of ops TVM lacks, nested function bodies, Resize normalisation, and the kernels opforge shapes itself (parallel
ScatterND, fused GatherND, int32 indexing)."""

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from opforge import expr
from opforge.bench import suite
from opforge.conformance import case_subgraph, load_cases
from opforge.extract.fold import expand_functions, fold_graph
from opforge.extract.subgraph import extract_nodes
from opforge.lower.onnx_decompose import decompose
from opforge.lower.onnx_rewrites import prepare_for_tvm
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
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    assert decompose(m)
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
