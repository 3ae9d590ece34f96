"""Verification: random valid inputs, the ONNX reference, comparison under per-dtype tolerances."""
