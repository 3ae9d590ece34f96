"""opforge's own TIR kernels, each a LegalizeOps override of one Relax op, named by the op registry
(opforge.ops) and applied by opforge.lower.tvm_lower. Each module's `override(threads, config)` is its entry point."""

# Device helpers opforge's kernels call by name (TVM's call_extern), defined in the plan's CUDA source itself right
# before the first kernel, so that the plan is a complete CUDA file (its fatbin and the plugin's kernels alike).
DEVICE_HELPERS = {
    # ScatterND add on fp16 adds two adjacent halves with one 32-bit atomic (addr is 4-byte aligned).
    "opf_atomic_add_half2": (
        "__device__ __forceinline__ void opf_atomic_add_half2(half* addr, half a, half b)\n"
        "{\n"
        "    atomicAdd(reinterpret_cast<__half2*>(addr), __halves2half2(a, b));\n"
        "}\n"
    ),
}
