"""opforge's own TIR kernels, each a LegalizeOps override of one Relax op, named by the op registry
(opforge.ops) and applied by opforge.lower.tvm_lower. Each module's `override(threads, config)` is its entry point."""
