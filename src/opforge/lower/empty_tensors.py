"""Tensors with no elements, out of the kernels: DLight's schedules divide by a zero loop extent, so before
legalization
- a Relax op whose result has a static shape with a 0 in it (a Slice starting past the end, the pass-through part of
  a RotaryEmbedding that rotates every feature) becomes an empty constant;
- a split with empty parts becomes slices of its non-empty parts (and empty constants);
- a concat drops its empty inputs.
Consumers read nothing from an empty tensor; a graph output that is empty gets the plan's copy kernel, launched
with no blocks (skipped)."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def _empty_dims(ty) -> list[int] | None:
    """The static shape of a tensor type with no elements, else None."""
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    values = getattr(ty.shape, "values", None)
    if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        return None
    dims = [int(v) for v in values]
    return dims if 0 in dims else None


def _empty(ty) -> relax.Constant:
    """An empty constant of the type (the plan bakes it as one byte)."""
    return relax.const(np.zeros(_empty_dims(ty), str(ty.dtype)))


@relax.expr_functor.mutator
class _EmptyAsConstant(relax.PyExprMutator):
    def visit_call_(self, call):  # the mutator's hook
        ty = getattr(call, "ty", None)
        if _empty_dims(ty) is not None:
            return self.builder_.normalize(_empty(ty))
        name = getattr(call.op, "name", "")
        if name == "relax.split" and isinstance(ty, relax.TupleType):
            split = self._split(call, ty)  # before visiting: re-making a split with empty parts fails
            if split is not None:
                return split
        call = super().visit_call_(call)
        return self._concat(call) if name == "relax.concat" else call

    def visit_tuple_getitem_(self, item):
        ty = getattr(item, "ty", None)
        if _empty_dims(ty) is not None:
            return self.builder_.normalize(_empty(ty))
        return super().visit_tuple_getitem_(item)

    @staticmethod
    def _concat(call):
        parts = call.args[0]
        if not isinstance(parts, relax.Tuple):
            return call
        kept = [p for p in parts.fields if _empty_dims(getattr(p, "ty", None)) is None]
        if len(kept) == len(parts.fields) or not kept:
            return call
        return relax.op.concat(relax.Tuple(kept), axis=call.attrs.axis)

    def _split(self, call, ty):
        """Slices of the non-empty parts (their extents along the axis may be symbolic), empty constants."""
        fields = list(ty.fields)
        shapes = [getattr(getattr(f, "shape", None), "values", None) for f in fields]
        if all(_empty_dims(f) is None for f in fields) or any(v is None for v in shapes):
            return None
        x = self.visit_expr(call.args[0])
        axis = int(call.attrs.axis) % len(shapes[0])
        parts, begin = [], tvm.tirx.IntImm("int64", 0)
        for f, dims in zip(fields, shapes):
            end = begin + dims[axis]
            parts.append(
                self.builder_.normalize(_empty(f))
                if _empty_dims(f) is not None
                else relax.op.strided_slice(x, [axis], [begin], [end])
            )
            begin = end
        return relax.Tuple(parts)


@tvm.transform.module_pass(opt_level=0, name="OpforgeEmptyTensorsAsConstants")
def empty_tensors_as_constants(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """Every Relax function's calls that yield a tensor of no elements replaced by an empty constant."""
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gv] = _EmptyAsConstant(mod).visit_expr(func)
    return mod


@relax.expr_functor.mutator
class _EmptyConstantAsZeros(relax.PyExprMutator):
    def visit_generic_const_(self, const):
        dims = _empty_dims(getattr(const, "ty", None))
        if dims is None:
            return super().visit_generic_const_(const)
        return self.builder_.normalize(relax.op.zeros(relax.ShapeExpr(dims), str(const.ty.dtype)))


@tvm.transform.module_pass(opt_level=0, name="OpforgeEmptyConstantsAsZeros")
def empty_constants_as_zeros(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    """For the CPU check only (llvm, no DLight): empty constants as R.zeros. TVM's VM cannot load an empty constant
    whose leading dimension is not 0 (its DLTensor reader fails); a zero-extent loop compiles for llvm."""
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gv] = _EmptyConstantAsZeros(mod).visit_expr(func)
    return mod
