"""ONNX node subgraph -> KernelPlan, through TVM Relax, DLight schedules and TVM's CUDA codegen.

The plan is read off TVM's IR, not off the generated C text: the Relax main function gives the order of the
TIR calls and the buffers between them; the host half of each TIR function, captured right after TVM splits host
from device code, gives each kernel launch (entry name, operands, grid, block, dynamic shared memory) as
expressions over the function's shape variables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import re
import time
from dataclasses import dataclass, field

import onnx
import tvm
from tvm import relax
from tvm import tirx as T
from tvm.ir.expr import Call
from tvm.relax.frontend.onnx import from_onnx

from opforge import ops
from opforge.core import dtypes, expr
from opforge.core.errors import LoweringError
from opforge.core.kernel_plan import (
    MAX_LAUNCHES,
    WORKSPACE_ALIGNMENT,
    ConstantSpec,
    DimSource,
    KernelArg,
    KernelPlan,
    Launch,
    SizeTensor,
    TensorSpec,
)
from opforge.core.schedule import ScheduleConfig
from opforge.extract.subgraph import NodeSubgraph
from opforge.lower.bool_vectors import scalarize_bool_vectors
from opforge.lower.onnx_rewrites import append_casts, tvm_candidates, unsupported_reason
from opforge.lower.target import CudaTarget
from opforge.lower.tir_text import dtype_of, tir_text

log = logging.getLogger(__name__)

_THREAD_TAGS = ("blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x", "threadIdx.y", "threadIdx.z")
_DYN_SMEM = "tirx.use_dyn_shared_memory"


def producer_name(config: ScheduleConfig | None = None) -> str:
    return f"tvm {tvm.__version__} {'dlight-default' if config is None else 'opforge-tuned ' + config.label}"


def lower_subgraph(
    sub: NodeSubgraph, target: CudaTarget | None = None, config: ScheduleConfig | None = None
) -> KernelPlan:
    """Lower the subgraph; where TVM fails on it, retry with the forms onnx_rewrites.tvm_candidates gives
    (folded, function bodies expanded) and report the first form's error if none lowers. `config` is a tuned
    schedule configuration (None: DLight's defaults)."""
    target = target or CudaTarget()
    if config is not None:
        target = dataclasses.replace(target, max_threads_per_block=config.threads)
    where = f"node {sub.node_name!r} ({sub.op_type})"
    t0 = time.perf_counter()
    first: LoweringError | None = None
    for k, model in enumerate(tvm_candidates(sub.model)):
        try:
            # Refusals apply to the nodes each form still holds (a registry rewrite may have replaced one).
            refused = unsupported_reason(model)
            if refused:
                raise LoweringError(refused)
            plan = _lower_form(model, sub, target, config)
        except LoweringError as e:
            first = first or e
            continue
        if k:
            plan.notes.append(f"lowered from form {k} of the subgraph (ONNX function bodies expanded)")
        log.info("lowered %s in %.2fs: %d launches", where, time.perf_counter() - t0, len(plan.launches))
        return plan
    assert first is not None
    raise LoweringError(f"{where}: {first}") from None


def _lower_form(
    model: onnx.ModelProto, sub: NodeSubgraph, target: CudaTarget, config: ScheduleConfig | None
) -> KernelPlan:
    try:
        # Under the target: opforge's own kernels made during the import (data-dependent outputs) are made for CUDA.
        with tvm.target.Target(target.tvm_config()):
            mod = _import(model, sub)
        mod = _schedule(mod, target, config)
        plan = _plan(mod, sub, target, plan_key(sub, config))
        plan.producer = producer_name(config)
    except LoweringError:
        raise
    except Exception as e:  # TVM raises its own error classes with multi-line C++ context
        raise LoweringError(f"TVM cannot lower it: {_reason(e)}") from e
    if len(plan.launches) > MAX_LAUNCHES:
        raise LoweringError(
            f"TVM's lowering makes {len(plan.launches)} kernel launches (at most {MAX_LAUNCHES}): it unrolled a loop "
            "over the tensor's elements"
        )
    return plan


def _reason(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("File ", "at ", "Traceback", "[bt]", "^"))]
    text = lines[-1] if lines else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _import(model: onnx.ModelProto, sub: NodeSubgraph) -> tvm.IRModule:
    mod = _imported(model)
    # TVM's frontend sometimes infers another output dtype than ONNX does (OneHot's float64): cast back.
    ret = mod["main"].body.body.ty
    got = [t.dtype for t in (ret.fields if isinstance(ret, relax.TupleType) else [ret])]
    casts = {}
    for k, out in enumerate(sub.model.graph.output):
        elem = out.type.tensor_type.elem_type
        if elem and k < len(got) and str(got[k]) != dtypes.from_onnx(elem).name:
            casts[k] = elem
    return _imported(append_casts(model, casts)) if casts else mod


def _imported(model: onnx.ModelProto) -> tvm.IRModule:
    """TVM's import of the model, its tensors of no elements made constants (lower/empty_tensors.py)."""
    from opforge.lower.empty_tensors import empty_tensors_as_constants

    return empty_tensors_as_constants(_from_onnx(model))


def _from_onnx(model) -> tvm.IRModule:
    from opforge.lower.tvm_converters import install

    install()
    try:
        return from_onnx(model, keep_params_in_input=False)
    except Exception as e:
        raise LoweringError(f"TVM's ONNX frontend cannot import it: {_reason(e)}") from e


def _schedule(mod: tvm.IRModule, target: CudaTarget, config: ScheduleConfig | None = None) -> tvm.IRModule:
    import tvm.s_tir.dlight as dl

    from opforge.lower.fusion import (
        forget_op_patterns,
        isolate_result_reshapes,
        mark_gathers_injective,
        mark_one_input_reductions,
        mark_reduction_tails,
        narrow_indices,
        sink_reshapes,
    )
    from opforge.lower.matmul_rule import SimtMatmul
    from opforge.lower.reduction_rule import CappedThreads, CrossThreadReduction, RowThreads
    from opforge.lower.spatial_rule import KeepReductionsFallback, MatrixVectorGEMV, Tolerant, TunedSpatial

    # opforge's own kernels take the block size DLight's rules use (lower_subgraph sets it to a tuned one).
    threads = target.max_threads_per_block

    seq = tvm.transform.Sequential(
        [
            relax.transform.DecomposeOpsForInference(),
            sink_reshapes,
            # Sort, scan and top-k have GPU-specific implementations chosen by target.
            relax.backend.DispatchSortScan(),
            relax.transform.LegalizeOps(kernel_overrides(threads, config)),
            relax.transform.AnnotateTIROpPattern(),
            mark_gathers_injective,
            isolate_result_reshapes,
            mark_one_input_reductions,
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            # A second round: a reduction that took its producers as a "reduction" (mark_one_input_reductions) is
            # now marked with its elementwise tail and takes its elementwise consumers (the Cast back to half).
            forget_op_patterns,
            relax.transform.AnnotateTIROpPattern(),
            mark_gathers_injective,
            isolate_result_reshapes,
            mark_reduction_tails,
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            narrow_indices,
            relax.transform.DeadCodeElimination(),
        ]
    )
    with tvm.target.Target(target.tvm_config()):
        mod = seq(mod)
        # A tuned block size also reaches DLight's row reductions: it caps Reduction's threads and sets
        # GeneralReduction's (the tuner measures each against DLight's defaults).
        reduction, general = dl.gpu.Reduction(), dl.gpu.GeneralReduction()
        if config is not None:
            reduction, general = CappedThreads(reduction, config.threads), RowThreads(general, config.threads)
        # ... and float32 matmuls a register-tiled schedule of that many threads (matmul_rule; else DLight's).
        matmuls = [dl.gpu.Matmul()] if config is None else [SimtMatmul(config), dl.gpu.Matmul()]
        rules = [Tolerant(r) for r in (*matmuls, MatrixVectorGEMV(dl.gpu.GEMV()), reduction)] + [
            general,
            CrossThreadReduction(),
        ]
        if config is not None:
            rules.append(TunedSpatial(config))
        return dl.ApplyDefaultSchedule(*rules, KeepReductionsFallback())(mod)


def kernel_overrides(threads: int, config: ScheduleConfig | None) -> dict:
    """The LegalizeOps overrides of opforge's own kernels, as the op registry names them."""
    out = {}
    for relax_op, ref in ops.kernel_overrides().items():
        module, _, function = ref.partition(":")
        out[relax_op] = getattr(importlib.import_module(module), function)(threads, config)
    return out


# --- buffers of the Relax main function -------------------------------------------------------------------


@dataclass(eq=False)
class _Storage:
    """A tensor the kernels see. A view (reshape) shares its root's memory with another shape."""

    kind: str  # input | constant | temp | output | scratch
    index: int  # input/constant/output index, temp slot
    dtype: str
    shape: list[str]
    root: _Storage | None = None
    offset: str = "0"  # workspace byte offset, for temp and scratch
    # A data-dependent output: (axis, the 0-d tensor holding its real extent there); the shape is the upper bound.
    bounded: tuple[int, _Storage] | None = None

    def base(self) -> _Storage:
        return self.root.base() if self.root is not None else self

    def view(self, shape: list[str]) -> _Storage:
        return _Storage(self.kind, self.index, self.dtype, shape, root=self)


@dataclass
class _Scalar:
    """A shape value passed to a TIR function as a scalar parameter."""

    value: str


@dataclass
class _Builder:
    dim_names: dict  # relax-level tir.Var -> dimension name
    reshapes: set = field(default_factory=set)  # TIR functions that only reshape (relax.analysis.has_reshape_pattern)
    inputs: list[_Storage] = field(default_factory=list)
    constants: list[ConstantSpec] = field(default_factory=list)
    temps: list[_Storage] = field(default_factory=list)
    const_ids: dict = field(default_factory=dict)

    def shape_of(self, ty) -> list[str]:
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            raise LoweringError(f"a tensor without a known rank/shape ({ty})")
        values = getattr(ty.shape, "values", None)
        if values is None:
            raise LoweringError(f"a tensor whose shape is not a shape expression ({ty.shape})")
        return [tir_text(v, self.dim_names) for v in values]

    def constant(self, c) -> _Storage:
        key = c.id_ if hasattr(c, "id_") else id(c)
        if key not in self.const_ids:
            self.const_ids[key] = len(self.constants)
            self.constants.append(ConstantSpec.from_array(f"c{len(self.constants)}", c.value.numpy()))
        spec = self.constants[self.const_ids[key]]
        return _Storage("constant", self.const_ids[key], spec.dtype, [str(s) for s in spec.shape])

    def temp(self, ty) -> _Storage:
        return self.temp_of(str(ty.dtype), self.shape_of(ty))

    def temp_of(self, dtype: str, shape: list[str]) -> _Storage:
        s = _Storage("temp", len(self.temps), dtype, shape)
        self.temps.append(s)
        return s


def _copy_kernel(dtype: str, funcs: dict, target: CudaTarget) -> tvm.ir.GlobalVar:
    """A scheduled TIR function copying n elements of `dtype` (one per dtype in `funcs`)."""
    import tvm.s_tir.dlight as dl
    from tvm import te

    name = f"opforge_copy_{dtype}"
    for gv in funcs:
        if gv.name_hint == name:
            return gv
    n = T.Var("n", "int64")
    src = te.placeholder((n,), dtype, "src")
    dst = te.compute((n,), lambda i: src[i], "dst")
    func = te.create_prim_func([src, dst]).with_attr("global_symbol", name)
    with tvm.target.Target(target.tvm_config()):
        scheduled = dl.ApplyDefaultSchedule(dl.gpu.Fallback())(tvm.IRModule({name: func}))
    gv = tvm.ir.GlobalVar(name)
    funcs[gv] = scheduled[name]
    return gv


def plan_key(sub: NodeSubgraph, config: ScheduleConfig | None) -> str:
    """The subgraph's key; a tuned configuration makes another plan (and other kernel symbols) of it."""
    if config is None:
        return sub.key
    return hashlib.sha256(f"{sub.key}|{config.label}".encode()).hexdigest()[:16]


def _plan(mod: tvm.IRModule, sub: NodeSubgraph, target: CudaTarget, key: str) -> KernelPlan:
    main = mod["main"]
    dims: list[DimSource] = []
    names: dict = {}
    for i, p in enumerate(main.params):
        for axis, v in enumerate(p.ty.shape.values):
            if isinstance(v, T.Var) and v not in names:
                # TVM's frontend names a zero-extent axis with an empty or clashing name: give it a fresh one.
                name = v.name if v.name.isidentifier() and v.name not in names.values() else f"d{i}_{axis}"
                names[v] = name
                dims.append(DimSource(name, i, axis))
    reshapes = {
        gv for gv, f in mod.functions.items() if isinstance(f, T.PrimFunc) and relax.analysis.has_reshape_pattern(f)
    }
    b = _Builder(names, reshapes)
    env: dict = {}  # relax Var -> _Storage, or a tuple of them
    for i, p in enumerate(main.params):
        st = _Storage("input", i, str(p.ty.dtype), b.shape_of(p.ty))
        b.inputs.append(st)
        env[p] = st

    calls: list[tuple[tvm.ir.GlobalVar, list]] = []  # TIR function, its arguments in parameter order
    body = main.body
    for block in body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                raise LoweringError(
                    f"unsupported Relax binding {type(binding).__name__} (a data-dependent output shape?)"
                )
            env[binding.var] = _bind_value(binding.value, env, b, calls)
    result = _resolve(body.body, env, b)
    results = list(result) if isinstance(result, tuple) else [result]

    outputs: list[TensorSpec] = []
    copy_funcs: dict = {}
    sizes: list[SizeTensor] = []
    size_storages: list[_Storage] = []
    for j, st in enumerate(results):
        if st.bounded is not None:
            axis, size = st.bounded
            if size.base() not in size_storages:
                size_storages.append(size.base())
                m = len(size_storages) - 1
                upper = st.shape[axis]
                sizes.append(SizeTensor(f"opf_size{m}", len(results) + m, upper, upper))
            name = sizes[size_storages.index(size.base())].name
            shape = [name if k == axis else d for k, d in enumerate(st.shape)]
            outputs.append(TensorSpec(sub.output_names[j] if j < len(sub.output_names) else f"out{j}", st.dtype, shape))
            st.base().kind, st.base().index = "output", j
            continue
        if st.base().kind != "temp":
            # An output that is an input, a constant or another output (Identity, a folded Shape): no kernel of
            # TVM's writes it, so the plan copies it into the output with a kernel of its own.
            numel = expr.product(st.shape)
            dst = b.temp_of(st.dtype, st.shape)
            calls.append((_copy_kernel(st.dtype, copy_funcs, target), [st.view([numel]), dst.view([numel])]))
            st = dst
        outputs.append(TensorSpec(sub.output_names[j] if j < len(sub.output_names) else f"out{j}", st.dtype, st.shape))
        st.base().kind, st.base().index = "output", j
    # The size tensors: outputs after the node's own, each written by the kernel that makes its extent.
    for s, st in zip(sizes, size_storages):
        if st.kind != "temp" or st.shape:
            raise LoweringError("a data-dependent extent is not a 0-d tensor of its own kernel")
        outputs.append(TensorSpec(s.name, st.dtype, []))
        st.kind, st.index = "output", s.output

    # Workspace: the remaining temporaries, one aligned slice each in order of creation, then the scratch
    # buffers TIR functions allocate for themselves (each call reuses the same region: calls run in order).
    temps_end = "0"
    for st in b.temps:
        if st.kind == "temp":
            st.offset = temps_end
            temps_end = expr.align_up(
                expr.add(temps_end, TensorSpec("", st.dtype, st.shape).nbytes()), WORKSPACE_ALIGNMENT
            )

    prefix = f"opf_{key[:10]}_"
    prims = {gv: f for gv, f in mod.functions.items() if isinstance(f, T.PrimFunc)} | copy_funcs
    used = {gv.name_hint for gv, _ in calls}
    source, host_funcs = _build(prims, used, prefix, target)

    launches: list[Launch] = []
    scratch_sizes: list[str] = []
    for gv, call_args in calls:
        ls, scratch = _launches(host_funcs[gv.name_hint], call_args, temps_end)
        launches += ls
        scratch_sizes.append(scratch)
    workspace = temps_end
    nonzero = [s for s in scratch_sizes if s != "0"]
    if nonzero:
        biggest = nonzero[0]
        for s in nonzero[1:]:
            biggest = expr.fold(f"max({biggest}, {s})")
        workspace = expr.add(temps_end, biggest)

    return KernelPlan(
        key=key,
        op_type=sub.op_type,
        dims=dims,
        inputs=[TensorSpec(n, st.dtype, st.shape) for n, st in zip(sub.input_names, b.inputs)],
        outputs=outputs,
        constants=b.constants,
        launches=launches,
        workspace=workspace,
        cuda_source=source,
        target=target.arch,
        producer=producer_name(),
        sizes=sizes,
    )


def _is_tensor_const(e) -> bool:
    return type(e).__name__ in ("Constant", "GenericConst") and isinstance(getattr(e, "ty", None), relax.TensorType)


def _resolve(e, env: dict, b: _Builder):
    if isinstance(e, relax.Var) and e in env:
        return env[e]
    if _is_tensor_const(e):
        return b.constant(e)
    if isinstance(e, relax.Tuple):
        return tuple(_resolve(f, env, b) for f in e.fields)
    if isinstance(e, relax.Var) and isinstance(e.ty, (relax.TensorType, relax.TupleType)):
        raise LoweringError(f"Relax variable {e.name} is used before it is bound")
    if isinstance(e, relax.ShapeExpr):
        raise LoweringError("a shape value is passed where a tensor is expected")
    # A shape value (TIR integer expression, possibly wrapped in a PrimValue) passed as a scalar parameter.
    return _Scalar(tir_text(getattr(e, "value", e), b.dim_names))


_VIEW_BUILTINS = ("vm.builtin.reshape",)


def _bounded_symbol() -> str:
    from opforge.lower.kernels.data_dependent import BOUNDED

    return BOUNDED


def _bind_value(value, env: dict, b: _Builder, calls: list):
    call_tir = tvm.ir.Op.get("relax.call_tir")
    op_name = getattr(getattr(value, "op", None), "name", "")
    if isinstance(value, relax.Call) and value.op.same_as(call_tir):
        args = [_resolve(a, env, b) for a in value.args[1].fields]
        if any(isinstance(a, tuple) for a in args):
            raise LoweringError("a TIR call takes a tuple argument")
        if any(isinstance(a, _Storage) and a.bounded is not None for a in args):
            raise LoweringError("a data-dependent output feeds another kernel: plan its node on its own")
        if value.args[0] in b.reshapes and len(args) == 1 and isinstance(args[0], _Storage):
            # A kernel that only copies its input into another shape (TOPI's reshape): a view, no launch.
            return args[0].view(b.shape_of(value.ty_args[0]))
        tir_vars = []
        if len(value.args) > 2:
            tir_vars = [_Scalar(tir_text(v, b.dim_names)) for v in value.args[2].values]
        out_ty = value.ty_args[0]
        outs = [b.temp(t) for t in out_ty.fields] if isinstance(out_ty, relax.TupleType) else [b.temp(out_ty)]
        calls.append((value.args[0], [*args, *outs, *tir_vars]))
        return tuple(outs) if isinstance(out_ty, relax.TupleType) else outs[0]
    if op_name == "relax.call_pure_packed" and str(getattr(value.args[0], "global_symbol", "")) == _bounded_symbol():
        # A data-dependent output of one of opforge's kernels: (tensor at its upper bound, size tensor, [axis]).
        src, size = _resolve(value.args[1], env, b), _resolve(value.args[2], env, b)
        view = src.view(src.shape)
        view.bounded = (int(value.args[3].values[0]), size)
        return view
    if op_name == "relax.call_pure_packed" and str(getattr(value.args[0], "global_symbol", "")) in _VIEW_BUILTINS:
        src = _resolve(value.args[1], env, b)
        return src.view(b.shape_of(value.ty_args[0]))
    if isinstance(value, relax.TupleGetItem):
        return _resolve(value.tuple_value, env, b)[value.index]
    if isinstance(value, (relax.Var, relax.Tuple)) or _is_tensor_const(value):
        return _resolve(value, env, b)
    if op_name == "relax.call_pure_packed":
        op_name = f"packed function {getattr(value.args[0], 'global_symbol', value.args[0])}"
    raise LoweringError(f"Relax op {op_name or type(value).__name__} remains after legalization (no TIR kernel)")


# --- TIR build and launch extraction -----------------------------------------------------------------------


def _build(prims: dict, used: set[str], prefix: str, target: CudaTarget) -> tuple[str, dict]:
    """Compile the TIR functions to CUDA; return the source and each function's host half (pre-MakePackedAPI)."""
    funcs = {
        gv: scalarize_bool_vectors(f).with_attr("global_symbol", prefix + gv.name_hint)
        for gv, f in prims.items()
        if gv.name_hint in used
    }
    captured: dict[str, tvm.IRModule] = {}

    @tvm.instrument.pass_instrument
    class _Capture:
        def run_before_pass(self, mod, info):
            if info.name.endswith("MakePackedAPI"):
                captured["mod"] = mod

    with tvm.transform.PassContext(opt_level=3, instruments=[_Capture()]):
        rt = T.build(tvm.IRModule(funcs), target=tvm.target.Target(target.tvm_config()))
    if "mod" not in captured:
        raise LoweringError("TVM's TIR pipeline has no MakePackedAPI pass: unsupported TVM version")
    host = {
        gv.name_hint: f
        for gv, f in captured["mod"].functions.items()
        if isinstance(f, T.PrimFunc) and gv.name_hint in used
    }
    return _cuda_source(rt), host


# TVM's CUDA printer writes a float infinity inside a bfloat16 constant as `inff`, which CUDA does not define.
_BARE_INFINITY = re.compile(r"\binff\b")


def _cuda_source(rt) -> str:
    stack = [rt]
    while stack:
        m = stack.pop()
        if m.kind == "cuda":
            return _with_device_helpers(_BARE_INFINITY.sub("__int_as_float(0x7f800000)", m.inspect_source()))
        stack.extend(m.imports)
    raise LoweringError("TVM produced no CUDA module")


def _with_device_helpers(source: str) -> str:
    """The definitions of the device helpers opforge's kernels call, put before the first kernel that needs them."""
    from opforge.lower.kernels import DEVICE_HELPERS

    used = [text for name, text in DEVICE_HELPERS.items() if re.search(rf"\b{name}\(", source)]
    if not used:
        return source
    at = source.find('extern "C" __global__')
    at = at if at >= 0 else len(source)
    return source[:at] + "".join(used) + "\n" + source[at:]


def _is_buffer(v) -> bool:
    return type(getattr(v, "ty", None)).__name__ == "BufferType"


def _buffer_of(e, buffers: dict):
    """The buffer variable behind `tirx.buffer_data(V)`, or None."""
    if isinstance(e, Call) and getattr(e.op, "name", "") == "tirx.buffer_data" and e.args[0] in buffers:
        return e.args[0]
    return None


def _launches(host: T.PrimFunc, call_args: list, scratch_base: str) -> tuple[list[Launch], str]:
    """The kernel launches of one TIR function's host half, and the bytes of scratch memory it allocates."""
    names: dict = {}  # the function's variables -> expressions over the plan's dimensions
    buffers: dict = {}  # buffer Var -> _Storage
    symbol = host.attrs["global_symbol"]
    if len(host.params) != len(call_args):
        raise LoweringError(
            f"TIR function {symbol} takes {len(host.params)} parameters, its call passes {len(call_args)}"
        )
    # Bind the function's own shape variables by matching its buffer shapes to the Relax tensors they receive.
    for p, arg in zip(host.params, call_args):
        if _is_buffer(p) != isinstance(arg, _Storage):
            raise LoweringError(f"TIR function {symbol}: parameter {p.name} does not match its argument")
        if isinstance(arg, _Scalar):
            names[p] = arg.value
            continue
        buffers[p] = arg
        if len(p.shape) != len(arg.shape):
            raise LoweringError(f"buffer {p.name} rank differs from its tensor")
        for d, s in zip(p.shape, arg.shape):
            if isinstance(d, T.Var) and d not in names:
                names[d] = s
        if isinstance(p.elem_offset, T.Var):
            names[p.elem_offset] = "0"  # opforge's buffers are dense and start at their pointer

    launches: list[Launch] = []
    scratch_end = "0"

    def visit(stmt) -> None:
        nonlocal scratch_end
        if isinstance(stmt, T.SeqStmt):
            for s in stmt.seq:
                visit(s)
        elif isinstance(stmt, T.Bind):
            names[stmt.var] = tir_text(stmt.value, names)
        elif isinstance(stmt, T.DeclBuffer):
            src = _buffer_of(stmt.data, buffers)
            if src is None:
                raise LoweringError(f"host code declares buffer {stmt.buffer.name} over memory it does not own")
            buffers[stmt.buffer] = buffers[src]
        elif isinstance(stmt, T.AllocBuffer):
            buf = stmt.buffer
            shape = [tir_text(d, names) for d in buf.shape]
            st = _Storage("scratch", -1, dtype_of(buf), shape, offset=expr.add(scratch_base, scratch_end))
            buffers[buf] = st
            scratch_end = expr.align_up(
                expr.add(scratch_end, TensorSpec("", st.dtype, shape).nbytes()), WORKSPACE_ALIGNMENT
            )
        elif isinstance(stmt, T.AttrStmt):
            visit(stmt.body)
        elif isinstance(stmt, T.For):
            # A loop of launches (multi-pass scans) is unrolled; its trip count must not depend on a dimension.
            lo, extent = tir_text(stmt.min, names), tir_text(stmt.extent, names)
            if not (expr.is_constant(lo) and expr.is_constant(extent)):
                raise LoweringError(
                    f"host code of {symbol} launches kernels in a loop of {extent} iterations, "
                    "which depends on a symbolic dimension: make that dimension static"
                )
            start = expr.evaluate(lo, {})
            for i in range(start, start + expr.evaluate(extent, {})):
                names[stmt.loop_var] = str(i)
                visit(stmt.body)
        elif isinstance(stmt, T.AssertStmt):
            pass  # shape checks TVM would run on the host; the plugin's shapes come from TensorRT
        elif isinstance(stmt, T.Evaluate) and isinstance(stmt.value, Call):
            launches.append(_launch(stmt.value, names, buffers))
        else:
            raise LoweringError(
                f"host code of {symbol} has a {type(stmt).__name__}: opforge supports straight-line kernel "
                "launches only"
            )

    visit(host.body)
    if not launches:
        raise LoweringError(f"TIR function {symbol} launches no kernel")
    return launches, scratch_end


def _launch(call: Call, names: dict, buffers: dict) -> Launch:
    if getattr(call.op, "name", "") != "tirx.call_ffi_kernel":
        raise LoweringError(f"host code calls {call.op}, not a kernel")
    tags = [str(t) for t in call.attrs.launch_params]
    for t in tags:
        if t not in _THREAD_TAGS and t != _DYN_SMEM:
            raise LoweringError(f"kernel launch parameter {t!r} is not supported")
    nvalues = len(tags)
    kernel = str(call.args[0].value)
    operands = list(call.args[1 : len(call.args) - nvalues])
    values = [tir_text(v, names) for v in call.args[len(call.args) - nvalues :]]
    launch_dims = dict(zip(tags, values))
    args: list[KernelArg] = []
    for a in operands:
        buf = _buffer_of(a, buffers)
        if buf is not None:
            st = buffers[buf].base()
            if st.kind in ("temp", "scratch"):
                args.append(KernelArg("workspace", st.dtype, offset=st.offset))
            else:
                args.append(KernelArg(st.kind, st.dtype, index=st.index))
        elif "handle" in dtype_of(a):
            raise LoweringError(f"kernel {kernel} takes pointer {a}, which is not a known buffer")
        else:
            args.append(KernelArg("scalar", dtype_of(a), value=tir_text(a, names)))
    return Launch(
        kernel=kernel,
        grid=[launch_dims.get(f"blockIdx.{c}", "1") for c in "xyz"],
        block=[launch_dims.get(f"threadIdx.{c}", "1") for c in "xyz"],
        shared_mem=launch_dims.get(_DYN_SMEM, "0"),
        args=args,
    )
