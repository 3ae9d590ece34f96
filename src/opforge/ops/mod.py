"""Mod: float Mod with fmod=0 is NumPy's mod (ONNX's reference): opforge's kernel takes fmod, then adds the divisor
where the signs differ (lower/kernels/float_mod.py). TVM's x - floor(x/y)*y gave NaN for infinite divisors.
fmod=1 on float16/bfloat16, which TVM's legalization refuses, is fmodf in float32 (same file)."""

from __future__ import annotations

from opforge.ops.base import OpRule


def _torch(torch, node, consts):
    fmod = next((x.i for x in node.attribute if x.name == "fmod"), 0)
    return torch.fmod if fmod else torch.remainder  # fmod=0: the divisor's sign, as NumPy's mod


RULES = [
    OpRule(
        ("Mod",),
        lowering="kernel",
        summary="float fmod=0: opforge's kernel with the divisor's sign (lower/kernels/float_mod.py); half-type "
        "fmod=1 computed in float32 there; else TVM",
        kernels={
            "relax.floor_mod": "opforge.lower.kernels.float_mod:override",
            "relax.mod": "opforge.lower.kernels.float_mod:override_fmod",
        },
        torch=_torch,
    )
]
