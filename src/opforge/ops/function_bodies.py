"""Ops TVM's ONNX frontend converts into something else, so their ONNX function bodies are expanded first:
onnxruntime's contrib Attention instead of ONNX's (checked on the conformance suite). LayerNormalization's
outputs Mean/InvStdDev are handled the same way, in normalization.py."""

from __future__ import annotations

from opforge.ops.base import OpRule

RULES = [
    OpRule(
        ("Attention",),
        lowering="function-body",
        summary="ONNX's function body (TVM's converter is onnxruntime's contrib Attention)",
        expand_body=lambda node: True,
    ),
]
