"""Op patterns re-marked so that TVM's FuseOps fuses more: gathers as injective, one-input reductions as
reductions.

Gathers. AnnotateTIROpPattern calls every kernel that loads at a data-dependent index opaque, so FuseOps keeps the index
normalisation the ONNX frontend puts before a GatherND (where(i < 0, i + dim, i)) as a kernel of its own: two
launches and an index tensor through global memory for a gather of a few KB. A kernel made only of spatial blocks
(each computing every element of what it writes once, such as TVM's gather: a transpose of the indices, then the
gather) is injective whatever it reads, and fusing producers into it is sound.

One-input reductions. A reduction with an elementwise tail (TOPI's mean: a sum then a division; softmax, layer_norm,
rms_norm) is marked "out-elementwise fusable", the pattern of a GEMM, and FuseOps fuses no producer into it: the
float32 Cast before a half-precision ReduceMean (lower/onnx_rewrites.py widen_accumulations) became a kernel of its
own that wrote a float32 copy of the input, three times the input's bytes moved again. A function whose reduction
blocks each read one of its inputs (a GEMM's reads two) is a reduction for fusion, like TOPI's sum: FuseOps then
fuses elementwise producers into it, and DLight's reduction rules inline them into the reduction's loads.

Reshapes before elementwise ops. A kernel computed on a view (GroupNormalization's rows of one group, an (N, G, M)
view of NCHW) is reshaped back before its consumers; FuseOps fuses no reshape into a reduction's tail, so SiLU after
GroupNorm was a second kernel re-reading the whole output. `sink_reshapes` moves each reshape below the elementwise
ops that read only it (and scalars): they run on the view, fuse into the kernel, and the reshape (a view in the plan)
comes last.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.s_tir.dlight.analysis import normalize_prim_func

ELEMWISE, BROADCAST, INJECTIVE, COMM_REDUCE, OUT_EWISE_FUSABLE, OPAQUE = 0, 1, 2, 3, 4, 8  # relax OpPatternKind


def _only_spatial_blocks(func: tirx.PrimFunc) -> bool:
    try:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
    except Exception:  # not a te-style function (externs, bound threads): leave it opaque
        return False
    return bool(infos) and all(set(info.dom_kind()) == {"S"} for info in infos)


def _reads_one_input_per_reduction(func: tirx.PrimFunc) -> bool:
    try:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
    except Exception:
        return False
    if not infos:
        return False
    params = list(func.params)
    reductions = [info for info in infos if "R" in info.dom_kind()]
    if not reductions:
        return False
    for info in reductions:
        block = sch.get(info.block_rv)
        # (same_as: a parameter's .data is a new object on every access, so sets of them never match)
        read = {k for r in block.reads for k, p in enumerate(params) if r.source.same_as(p)}
        if len(read) > 1:
            return False
    return True


@tvm.transform.module_pass(opt_level=0, name="OpforgeMarkOneInputReductions")
def mark_one_input_reductions(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """OUT_EWISE_FUSABLE functions whose reduction blocks each read one input, called on the output of an
    elementwise/injective kernel that nothing else reads, re-marked COMM_REDUCE (so that kernel fuses into them).
    Elsewhere the marks stay: a reduction over a graph input keeps TVM's grouping (InstanceNormalization's mean
    stays fused with its elementwise tail)."""
    calls = _main_calls(mod)
    if calls is None:
        return mod
    readers = _readers(calls)
    produced_by = {var: call.args[0] for var, call in calls}

    def pattern(gv) -> int | None:
        return _pattern(mod[gv])

    marked = set()
    for _, call in calls:
        gv = call.args[0]
        if gv in marked or pattern(gv) != OUT_EWISE_FUSABLE:
            continue
        fed = [a for a in call.args[1].fields if a in produced_by and len(readers[a]) == 1]
        producers = [pattern(produced_by[a]) for a in fed]
        # FuseOps merges elementwise and broadcast producers into a reduction (not injective ones: a transpose).
        if any(p is not None and p <= BROADCAST for p in producers) and _reads_one_input_per_reduction(mod[gv]):
            mod[gv] = mod[gv].with_attr("op_pattern", COMM_REDUCE)
            marked.add(gv)
    return mod


MIN_TAIL_ROWS = 128  # values a reduction makes before it takes its elementwise tail (mark_reduction_tails)


@tvm.transform.module_pass(opt_level=0, name="OpforgeMarkReductionTails")
def mark_reduction_tails(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """COMM_REDUCE functions whose one output only an elementwise kernel reads, re-marked OUT_EWISE_FUSABLE.

    FuseOps fuses nothing after a reduction (a tail goes with GEMM-like patterns only): ReduceL2's sqrt, ReduceLogSum's
    log, ReduceLogSumExp's log and add were kernels of their own, one launch more for a few KB (0.50x torch.compile on
    a 16x197x384 ReduceL2 on the H100). Marked like a reduction with an elementwise tail (TOPI's mean), FuseOps fuses
    the elementwise consumers of the same shape (not a broadcast), and DLight's reduction rules make it the epilogue.
    Run in the second round, after the reductions took their producers. Only for reductions to at least
    MIN_TAIL_ROWS values: DLight splits a reduction to a few values over several blocks, which it cannot do with a
    tail (DynamicQuantizeLinear's max over 4M elements with its tail became one thread's loop)."""
    calls = _main_calls(mod)
    if calls is None:
        return mod
    readers = _readers(calls)
    for var, call in calls:
        gv = call.args[0]
        func = mod[gv]
        if _pattern(func) != COMM_REDUCE or isinstance(call.ty_args[0], relax.TupleType):
            continue
        dims = getattr(call.ty_args[0].shape, "values", None)
        if dims is None or not all(isinstance(d, tirx.IntImm) for d in dims):
            continue
        if math.prod(int(d) for d in dims) < MIN_TAIL_ROWS:
            continue
        users = readers.get(var, [])
        if users and all(_pattern(mod[u]) == ELEMWISE for u in users):
            mod[gv] = func.with_attr("op_pattern", OUT_EWISE_FUSABLE)
    return mod


@tvm.transform.module_pass(opt_level=0, name="OpforgeIsolateResultReshapes")
def isolate_result_reshapes(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Reshape functions whose every call makes a result of main that no kernel reads, marked OPAQUE: FuseOps then
    leaves them alone and the plan makes them views. Fused into the elementwise kernel before them (as an
    injective op), a trailing reshape made that kernel injective, and a reduction takes no injective tail: SiLU
    stayed a kernel of its own after a half-precision GroupNorm (see sink_reshapes)."""
    calls = _main_calls(mod)
    if calls is None:
        return mod
    read = set(_readers(calls))
    by_func: dict = {}
    for var, call in calls:
        by_func.setdefault(call.args[0], []).append(var)
    for gv, vars_ in by_func.items():
        func = mod[gv]
        if relax.analysis.has_reshape_pattern(func) and not any(v in read for v in vars_):
            mod[gv] = func.with_attr("op_pattern", OPAQUE)
    return mod


def _main_calls(mod: tvm.IRModule):
    """The (bound var, call_tir) pairs of the main function, in order; None when it is not a dataflow function."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    if "main" not in [g.name_hint for g in mod.functions]:
        return None
    main = mod[mod.get_global_var("main")]
    if not isinstance(main, relax.Function) or not isinstance(main.body, relax.SeqExpr):
        return None
    return [
        (b.var, b.value)
        for block in main.body.blocks
        for b in block.bindings
        if isinstance(b, relax.VarBinding)
        and isinstance(getattr(b.value, "op", None), tvm.ir.Op)
        and b.value.op.same_as(call_tir)
    ]


def _readers(calls) -> dict:
    """Each value of the main function -> the TIR functions of the calls that read it (once per reading call)."""
    readers: dict = {}
    for _, call in calls:
        for a in call.args[1].fields:
            readers.setdefault(a, []).append(call.args[0])
    return readers


def _pattern(func) -> int | None:
    p = func.attrs.get("op_pattern") if isinstance(func, tirx.PrimFunc) and func.attrs is not None else None
    return None if p is None else int(p)


@tvm.transform.module_pass(opt_level=0, name="OpforgeForgetOpPatterns")
def forget_op_patterns(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Every TIR function without its op_pattern, so AnnotateTIROpPattern marks them afresh (it keeps a mark that is
    there: a function re-marked a reduction that fused nothing would stay one and take no elementwise tail)."""

    def forget(_gv, func):
        return func.without_attr("op_pattern") if func.attrs is not None and "op_pattern" in func.attrs else None

    return _rewrite_prim_funcs(mod, forget)


def _rewrite_prim_funcs(mod: tvm.IRModule, rewrite: Callable[[tvm.ir.GlobalVar, tirx.PrimFunc], tirx.PrimFunc | None]):
    """The module with each TIR function replaced by rewrite(gv, func) where that is not None."""
    updates = {gv: rewrite(gv, f) for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    for gv, func in updates.items():
        if func is not None:
            mod[gv] = func
    return mod


@tvm.transform.module_pass(opt_level=0, name="OpforgeMarkGathersInjective")
def mark_gathers_injective(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    def mark(_gv, func):
        pattern = func.attrs.get("op_pattern") if func.attrs is not None else None
        if pattern is not None and int(pattern) == OPAQUE and _only_spatial_blocks(func):
            return func.with_attr("op_pattern", INJECTIVE)
        return None

    return _rewrite_prim_funcs(mod, mark)


def _narrowable(func: tirx.PrimFunc) -> bool:
    """Every tensor static and under 2**31 elements, and none holding 64-bit integers: narrowing would change
    such a tensor's dtype (TVM refuses it for parameters; for intermediates, check the allocations)."""
    for p in func.params:
        shape = getattr(p, "shape", None)
        if shape is None:
            continue
        if any(not isinstance(d, tirx.IntImm) for d in shape) or str(p.dtype) in ("int64", "uint64"):
            return False
        if math.prod(d.value for d in shape) >= 2**31:
            return False
    text = func.script()
    return not any("alloc_buffer" in line and 'int64")' in line for line in text.splitlines())


@tvm.transform.module_pass(opt_level=0, name="OpforgeNarrowIndices")
def narrow_indices(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """int32 index arithmetic where every tensor of a kernel is small enough. Relax shapes are int64, and the
    int64 divisions and modulos of a resize's coordinate mapping make it compute-bound (a 64-bit division is a
    long instruction sequence on the GPU); TVM's own NarrowDataType leaves them when thread indices are int64."""

    def narrow(gv, func):
        if not _narrowable(func):
            return None
        return tirx.transform.ForceNarrowIndexToInt32()(tvm.IRModule({gv: func}))[gv]

    return _rewrite_prim_funcs(mod, narrow)


# Relax ops computing each output element from the same element of every (same-shaped) tensor operand.
_ELEMENTWISE_OPS = frozenset(
    "relax." + name
    for name in (
        "abs",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "astype",
        "atan",
        "atanh",
        "ceil",
        "clip",
        "cos",
        "cosh",
        "erf",
        "exp",
        "floor",
        "isfinite",
        "isinf",
        "isnan",
        "log",
        "logical_not",
        "negative",
        "nn.gelu",
        "nn.gelu_tanh",
        "nn.relu",
        "nn.silu",
        "round",
        "rsqrt",
        "sigmoid",
        "sign",
        "sin",
        "sinh",
        "sqrt",
        "square",
        "tan",
        "tanh",
        "add",
        "subtract",
        "multiply",
        "divide",
        "power",
        "maximum",
        "minimum",
        "floor_divide",
        "floor_mod",
        "equal",
        "not_equal",
        "less",
        "less_equal",
        "greater",
        "greater_equal",
        "logical_and",
        "logical_or",
        "where",
    )
)


def _is_scalar(e) -> bool:
    ty = getattr(e, "ty", None)
    return isinstance(ty, relax.TensorType) and ty.ndim == 0


@mutator
class _SinkReshapes(PyExprMutator):
    def visit_call_(self, call):
        call = super().visit_call_(call)
        name = getattr(call.op, "name", "")
        if name not in _ELEMENTWISE_OPS:
            return call
        sources, target = [], None
        for arg in call.args:
            if _is_scalar(arg):
                sources.append(arg)
                continue
            bound = self.lookup_binding(arg) if isinstance(arg, relax.Var) else None
            if not (isinstance(bound, relax.Call) and getattr(bound.op, "name", "") == "relax.reshape"):
                return call
            src, shape = bound.args
            if target is None:
                target, source_shape = shape, src.ty.shape
            elif not (tvm_ffi.structural_equal(shape, target) and tvm_ffi.structural_equal(src.ty.shape, source_shape)):
                return call
            sources.append(src)
        if target is None:
            return call
        inner = self.builder_.emit(relax.Call(call.op, sources, call.attrs, call.ty_args))
        return relax.op.reshape(inner, target)


def _users(func: relax.Function) -> dict:
    """var -> the values (calls) that read it, over the function's bindings."""
    out: dict = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            for var in relax.analysis.free_vars(binding.value):
                out.setdefault(var, []).append(binding.value)
    for var in relax.analysis.free_vars(func.body.body):
        out.setdefault(var, []).append(None)  # the function's result
    return out


@mutator
class _HoistReshapes(PyExprMutator):
    """reshape(op(x, scalars)) -> op(reshape(x), scalars) where the reshape feeds only kernels (call_tir) and op's
    result only the reshape: the op (a widening cast, say) then fuses into the kernel's loads."""

    def __init__(self, mod, users: dict):
        super().__init__(mod)
        self.users = users

    def visit_var_binding_(self, binding):
        value = binding.value
        readers = self.users.get(binding.var, [])
        feeds_kernels = readers and all(
            isinstance(r, relax.Call) and getattr(r.op, "name", "") == "relax.call_tir" for r in readers
        )
        if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.reshape" and feeds_kernels:
            src, shape = value.args
            bound = self.lookup_binding(src) if isinstance(src, relax.Var) else None
            if (
                isinstance(bound, relax.Call)
                and getattr(bound.op, "name", "") in _ELEMENTWISE_OPS
                and len(self.users.get(src, [])) == 1
            ):
                tensors = [a for a in bound.args if not _is_scalar(a)]
                if len(tensors) == 1:
                    moved = self.builder_.emit(relax.op.reshape(tensors[0], shape))
                    args = [moved if not _is_scalar(a) else a for a in bound.args]
                    new = self.builder_.emit(relax.Call(bound.op, args, bound.attrs, bound.ty_args))
                    self.set_var_remap(binding.var, new)
                    return
        super().visit_var_binding_(binding)


@tvm.transform.module_pass(opt_level=0, name="MoveReshapesOffKernels")
def sink_reshapes(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Elementwise ops whose tensor operands are all one reshape's kind (same source shape, same target) run before
    it, on the sources; then a reshape feeding only kernels moves above the one-operand elementwise op it reshapes
    (module docstring). Each once, in that order: the second does not undo the first."""
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            func = _SinkReshapes(mod).visit_expr(func)
            mod[gv] = _HoistReshapes(mod, _users(func)).visit_expr(func)
    return mod
