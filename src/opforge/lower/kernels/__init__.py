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
    # TopK's radix select (lower/kernels/topk.py): histogram counting, the digit pick, a gather slot.
    "opf_radix_count": (
        "// Counts `digit` into hist[256] where `take`: the lanes holding one digit add once, through their lowest\n"
        "// lane (values of one scale share a top digit: one atomic per warp instead of 32 on one bin).\n"
        "__device__ __forceinline__ void opf_radix_count(unsigned* hist, unsigned digit, bool take)\n"
        "{\n"
        "    unsigned const same = __match_any_sync(__activemask(), take ? digit : 256u);\n"
        "    if (take && __ffs(same) - 1 == static_cast<int>(threadIdx.x % 32))\n"
        "    {\n"
        "        atomicAdd(hist + digit, static_cast<unsigned>(__popc(same)));\n"
        "    }\n"
        "}\n"
    ),
    "opf_radix_pick": (
        "// Run by the 32 lanes of one warp: the digit d of hist[256] such that the bins above d hold fewer than\n"
        "// `need` elements and d's bin takes the count to `need` or more. Writes out[0] = d, out[1] = the elements\n"
        "// above d, out[2] = hist[d] (the lane whose eight bins hold d writes).\n"
        "__device__ __forceinline__ void opf_radix_pick(unsigned const* hist, unsigned need, unsigned* out)\n"
        "{\n"
        "    unsigned const lane = threadIdx.x % 32;\n"
        "    unsigned own = 0;\n"
        "    for (unsigned b = 0; b < 8; ++b)\n"
        "    {\n"
        "        own += hist[lane * 8 + b];\n"
        "    }\n"
        "    unsigned atLeast = own; // the elements in this lane's bins and every higher lane's\n"
        "    for (unsigned d = 1; d < 32; d *= 2)\n"
        "    {\n"
        "        unsigned const up = __shfl_down_sync(0xffffffffu, atLeast, d);\n"
        "        atLeast += lane + d < 32 ? up : 0u;\n"
        "    }\n"
        "    unsigned above = atLeast - own;\n"
        "    if (above < need && need <= atLeast)\n"
        "    {\n"
        "        for (int b = 7; b >= 0; --b)\n"
        "        {\n"
        "            unsigned const c = hist[lane * 8 + b];\n"
        "            if (above + c >= need)\n"
        "            {\n"
        "                out[0] = lane * 8 + b;\n"
        "                out[1] = above;\n"
        "                out[2] = c;\n"
        "                return;\n"
        "            }\n"
        "            above += c;\n"
        "        }\n"
        "    }\n"
        "}\n"
    ),
    "opf_radix_slot": (
        "// The next free slot of a shared counter.\n"
        "__device__ __forceinline__ unsigned opf_radix_slot(unsigned* counter)\n"
        "{\n"
        "    return atomicAdd(counter, 1u);\n"
        "}\n"
    ),
}
