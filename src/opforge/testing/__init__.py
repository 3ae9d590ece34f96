"""Test runners over the whole pipeline (not pipeline stages): the ONNX conformance suite, differential fuzzing."""
