"""BitCast (opset 26): TVM's frontend has no converter; opforge registers one (lower/tvm_converters.py)."""

from __future__ import annotations

from opforge.ops.base import OpRule

RULES = [OpRule(("BitCast",), summary="opforge's converter for TVM's frontend (lower/tvm_converters.py)")]
