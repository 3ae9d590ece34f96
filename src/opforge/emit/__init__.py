"""Emission: plugin C++ sources and the rewritten ONNX model."""
