"""Data files shipped with opforge (the built-in TensorRT support table)."""
