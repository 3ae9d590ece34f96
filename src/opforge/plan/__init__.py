"""The kernel plan: what every stage after lowering consumes."""

from opforge.plan.kernel_plan import (
    PLAN_VERSION,
    ConstantSpec,
    DimSource,
    KernelArg,
    KernelPlan,
    Launch,
    TensorSpec,
)

__all__ = ["PLAN_VERSION", "ConstantSpec", "DimSource", "KernelArg", "KernelPlan", "Launch", "TensorSpec"]
