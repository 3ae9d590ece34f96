"""Run a subgraph as opforge lowers it, but on the CPU: the same ONNX forms (registry rewrites, function bodies),
the same TVM import and the same legalization with opforge's own kernels, compiled for llvm and run by Relax's VM.

This is a semantic pre-check that needs no GPU: a divergence from ONNX's reference here is in TVM's frontend, a
legalization or an opforge kernel, not in the CUDA schedule. (DLight's GPU schedules are not applied; they do not
change what is computed.)
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from opforge.core.errors import LoweringError
from opforge.extract.subgraph import NodeSubgraph
from opforge.lower.empty_tensors import empty_constants_as_zeros
from opforge.lower.onnx_rewrites import tvm_candidates, unsupported_reason
from opforge.lower.tvm_lower import _import, _reason, kernel_overrides

_registered = False


def _register_bounded() -> None:
    """The packed function that marks a data-dependent output (opforge.lower.kernels.data_dependent.BOUNDED), for
    Relax's VM: the tensor at its real shape, the dense prefix of its allocation."""
    global _registered
    if _registered:
        return
    from opforge.lower.kernels.data_dependent import BOUNDED

    def trim(tensor, size, axis):
        a = tensor.numpy()
        shape = list(a.shape)
        shape[int(axis[0])] = int(size.numpy())
        return tvm.runtime.tensor(np.ascontiguousarray(a.reshape(-1)[: int(np.prod(shape))].reshape(shape)))

    tvm.register_global_func(BOUNDED, trim, override=True)
    _registered = True


def compile_on_cpu(sub: NodeSubgraph, threads: int = 256) -> relax.VirtualMachine:
    """The subgraph's first ONNX form that TVM imports, legalized with opforge's kernels, compiled for llvm."""
    _register_bounded()
    first: str | None = None
    refusal: str | None = None
    for model in tvm_candidates(sub.model):
        refused = unsupported_reason(model)  # of the nodes this form still holds
        if refused:
            refusal = refusal or refused
            continue
        try:
            mod = _import(model, sub)
            seq = tvm.transform.Sequential(
                [
                    empty_constants_as_zeros,
                    relax.transform.DecomposeOpsForInference(),
                    relax.transform.LegalizeOps(kernel_overrides(threads, None)),
                ]
            )
            mod = seq(mod)
            ex = tvm.compile(mod, target="llvm")
            return relax.VirtualMachine(ex, tvm.cpu())
        except Exception as e:
            first = first or _reason(e)
    raise LoweringError(refusal if first is None else f"TVM (llvm) cannot compile it: {first}")


def run_on_cpu(sub: NodeSubgraph, inputs: list[np.ndarray], threads: int = 256) -> list[np.ndarray]:
    """The subgraph's outputs for `inputs` (its graph inputs in order), computed by TVM on the CPU."""
    vm = compile_on_cpu(sub, threads)
    # np.array, not np.ascontiguousarray: that turns 0-d scalars into shape (1,)
    out = vm["main"](*[tvm.runtime.tensor(np.array(x, order="C", copy=True)) for x in inputs])
    outs = [out] if hasattr(out, "numpy") else list(out)
    return [np.asarray(o.numpy()) for o in outs]
