"""The subgraph as TVM gets it: the op registry's refusals, rewrites and decompositions applied, function bodies
expanded where TVM's frontend falls short (opforge.ops holds the per-op knowledge; this module applies it).

The plugin still implements the original node(s): these only change how its kernels are generated.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from opforge.extract.fold import expand_functions, fold_graph
from opforge.ops import apply_rewrites, rule_for
from opforge.ops.base import Emitter, attrs, elem_types


def _tvm_gets_wrong(node: onnx.NodeProto) -> bool:
    expand = rule_for(node).expand_body
    return expand is not None and expand(node)


def unsupported_reason(model: onnx.ModelProto) -> str | None:
    """The first refusal the registry gives for a node of the model (attributes TVM's frontend would ignore). Asked
    of each form tvm_candidates gives: a node a registry rewrite replaced is no longer there to refuse."""
    types, constants = elem_types(model), {t.name for t in model.graph.initializer}
    for n in model.graph.node:
        rule = rule_for(n)
        reason = rule.refuse(n, attrs(n)) if rule.refuse else None
        if not reason and rule.refuse_in_graph:
            reason = rule.refuse_in_graph(Emitter(model, n, types, constants), n, attrs(n))
        if reason:
            return reason
    return None


def tvm_candidates(model: onnx.ModelProto) -> list[onnx.ModelProto]:
    """Forms of the model for TVM to try in order: folded (ops TVM converts wrongly expanded into their ONNX
    function bodies); also with the ops TVM lacks expanded; with every op that has a body expanded. Forms equal
    to an earlier one are left out."""
    have = _tvm_converters()
    # Widened before any function body is expanded: a half-precision op computes in float32 as a whole, not
    # only the reductions its body happens to hold.
    wide = widen_accumulations(model)
    forms = [
        expand_functions(wide, _tvm_gets_wrong),
        expand_functions(wide, lambda n: (have is not None and n.op_type not in have) or _tvm_gets_wrong(n)),
        expand_functions(wide, lambda n: True),
    ]
    out, seen = [], set()
    for f in forms:
        m = prepare_for_tvm(fold_graph(f))
        key = m.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def _tvm_converters() -> set[str] | None:
    """The op types TVM's ONNX frontend converts (None if this TVM does not say)."""
    from tvm.relax.frontend.onnx import onnx_frontend

    try:
        return set(onnx_frontend._get_convert_map())
    except Exception:
        return None


def prepare_for_tvm(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model with its half-precision accumulations widened (widen_accumulations) and every node the
    registry rewrites replaced by its rewrite (one pass: the nodes a rewrite emits are not rewritten again)."""
    return apply_rewrites(widen_accumulations(model))


# Ops that accumulate many products or terms, or compute sampling coordinates from the data: in float16/bfloat16
# they are computed in float32, as TensorRT does (it accumulates half GEMMs, convolutions, reductions and
# normalizations in float32) and as PyTorch's kernels do (their "opmath" type). TVM keeps the accumulator in the
# input's type on the GPU: a bfloat16 running sum stops growing near 256 (its spacing there is 2), so a sum of
# 1500 values near 1 came out a third of its size; an fp16 GridSample over a 100-pixel row placed its samples on a
# 1/16-pixel grid. Elementwise ops are not widened: one rounding per element is what the half type promises.
ACCUMULATING_OPS = frozenset(
    {
        # products and sums
        "Einsum",
        "Gemm",
        "MatMul",
        "Conv",
        "ConvTranspose",
        "DeformConv",
        "Col2Im",
        "CumSum",
        "DFT",
        "STFT",
        "Det",
        "Attention",
        "RNN",
        "GRU",
        "LSTM",
        # reductions
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMean",
        "ReduceSum",
        "ReduceSumSquare",
        "AveragePool",
        "GlobalAveragePool",
        "LpPool",
        "GlobalLpPool",
        "Softmax",
        "LogSoftmax",
        "NegativeLogLikelihoodLoss",
        "SoftmaxCrossEntropyLoss",
        # normalizations (a mean and a variance)
        "BatchNormalization",
        "InstanceNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "RMSNormalization",
        "MeanVarianceNormalization",
        "LpNormalization",
        "LRN",
        # sampling at coordinates computed from the data
        "GridSample",
        "RoiAlign",
    }
)
# Ops TVM's CUDA backend has no half-precision form of: it emits hatan, hcosh, hsinh, htan, herf (bfloat16) and
# hnearbyint (Round, QuantizeLinear's rounding), which CUDA's half headers do not define (nvcc fails), leaves
# tirx.asin/acos/asinh/acosh/atanh unresolved, and refuses power, isnan and isinf on bfloat16. On float32 they are
# one correctly rounded call each; rounding the float32 result to the half type once is what a half form would give.
NO_HALF_FORM = frozenset(
    {
        "Acos",
        "Acosh",
        "Asin",
        "Asinh",
        "Atan",
        "Atanh",
        "Cosh",
        "Sinh",
        "Tan",
        "Erf",
        "Gelu",
        "Round",
        "QuantizeLinear",
        "IsInf",
        "IsNaN",
        "Pow",
    }
)
WIDENED_OPS = ACCUMULATING_OPS | NO_HALF_FORM
# Ops that accumulate only with some reductions: ScatterElements adds (or multiplies) every update aimed at one
# element, in the data's type on the GPU (half atomics round after each add: 4096 fp16 updates into 5 elements came
# out 2.8% off the float32 sum rounded once). ScatterND's add is not widened: its packed half2 atomics keep TPAT's
# fp16 case at the bandwidth, and the fuzz run found no wrong ScatterND case.
ACCUMULATING_REDUCTIONS = {"ScatterElements": ("add", "mul")}
_HALF = (TensorProto.FLOAT16, TensorProto.BFLOAT16)


def _widened(node: onnx.NodeProto) -> bool:
    """Whether `node` computes in float32 when its float inputs are half (WIDENED_OPS, ACCUMULATING_REDUCTIONS)."""
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in WIDENED_OPS:
        return True
    reductions = ACCUMULATING_REDUCTIONS.get(node.op_type, ())
    attr = {a.name: a for a in node.attribute}.get("reduction")
    return attr is not None and attr.s.decode() in reductions


def widen_accumulations(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model where every node of WIDENED_OPS (ACCUMULATING_OPS, NO_HALF_FORM) whose float inputs are
    float16/bfloat16 computes in float32: its half inputs cast up, the node on float32, its half outputs cast back
    (the names and types the graph sees are unchanged). Non-float inputs (axes) are passed as they are."""
    from opforge.ops.base import elem_types

    types = elem_types(model)
    nodes = [n for n in model.graph.node if _widened(n)]
    if not any(types.get(i) in _HALF for n in nodes for i in n.input):
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    infos = {vi.name: vi for vi in [*m.graph.input, *m.graph.value_info, *m.graph.output]}

    def declare_float(name: str, like: str) -> None:
        # The widened tensor's type and shape, so rewrites that read a rank (BatchNormalization) still see it.
        if like in infos:
            vi = onnx.ValueInfoProto()
            vi.CopyFrom(infos[like])
            vi.name = name
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
            m.graph.value_info.append(vi)

    out: list[onnx.NodeProto] = []
    for k, node in enumerate(m.graph.node):
        half = {types.get(i) for i in node.input if types.get(i) in _HALF}
        outs = [types.get(o) for o in node.output]
        if not _widened(node) or len(half) != 1:
            out.append(node)
            continue
        elem = half.pop()
        wide = onnx.NodeProto()
        wide.CopyFrom(node)
        same = _same_type_inputs(node, model, [j for j, i in enumerate(node.input) if types.get(i) == elem])
        for j, i in enumerate(node.input):
            if types.get(i) == elem or (i and types.get(i) is None and j in same):
                wide.input[j] = f"{i}__opf_f32_{k}"
                declare_float(wide.input[j], i)
                out.append(helper.make_node("Cast", [i], [wide.input[j]], to=TensorProto.FLOAT))
        # Outputs of the half type (or of a type not inferred) are cast back; others (LayerNormalization's
        # float32 Mean, MaxPool's int64 Indices) keep their name and type.
        back = [j for j, (o, t) in enumerate(zip(node.output, outs)) if o and t in (elem, None)]
        for j in back:
            wide.output[j] = f"{node.output[j]}__opf_f32"
            declare_float(wide.output[j], node.output[j])
        out.append(wide)
        for j in back:
            out.append(helper.make_node("Cast", [wide.output[j]], [node.output[j]], to=elem))
    del m.graph.node[:]
    m.graph.node.extend(out)
    return m


def _same_type_inputs(node: onnx.NodeProto, model: onnx.ModelProto, known: list[int]) -> set[int]:
    """Input positions of `node` whose schema type constraint is that of an input at a `known` position: they hold
    the same type, though shape inference gave no type for some (a Conv's input made by a Concat in an expanded
    function body was left float16 while its weight was cast up: TVM refused the mixed types)."""
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    try:
        schema = onnx.defs.get_schema(node.op_type, version or onnx.defs.onnx_opset_version(), node.domain)
    except Exception:  # an op ONNX does not define at this opset: only the inputs of known type
        return set()
    formal = list(schema.inputs)
    if not formal:
        return set()

    def type_str(j: int) -> str:
        return formal[min(j, len(formal) - 1)].type_str

    wanted = {type_str(j) for j in known}
    return {j for j in range(len(node.input)) if type_str(j) in wanted}


def append_casts(model: onnx.ModelProto, casts: dict[int, int]) -> onnx.ModelProto:
    """Cast output k to ONNX element type casts[k] (where TVM's frontend infers another dtype than ONNX)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for k, elem in casts.items():
        out = m.graph.output[k]
        raw = f"{out.name}_opforge_uncast"
        for n in m.graph.node:
            n.output[:] = [raw if o == out.name else o for o in n.output]
        m.graph.node.append(helper.make_node("Cast", [raw], [out.name], to=elem))
    return m
