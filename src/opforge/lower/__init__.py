"""Lowering: ONNX subgraph -> TVM Relax -> scheduled TIR -> CUDA source and a kernel plan.

This is the only stage that imports TVM, and it does so inside its functions.
"""

from opforge.lower.target import CudaTarget

__all__ = ["CudaTarget", "lower_subgraph"]


def lower_subgraph(*args, **kwargs):
    from opforge.lower.tvm_lower import lower_subgraph as _lower

    return _lower(*args, **kwargs)
