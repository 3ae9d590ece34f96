"""Planning: lower each distinct node subgraph once (cached by content hash) into a KernelPlan on disk.

The KernelPlan type itself lives in opforge.core.kernel_plan, below every stage.
"""
