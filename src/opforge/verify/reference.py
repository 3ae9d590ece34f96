"""The ONNX reference: onnxruntime on the CPU, or onnx's own ReferenceEvaluator where onnxruntime cannot run it."""

from __future__ import annotations

import numpy as np
import onnx

from opforge.core.errors import OpforgeError


class ReferenceFailed(OpforgeError):
    """Neither onnxruntime nor onnx's reference evaluator computes the model: a row says so, not a traceback."""


def reference_outputs(model: onnx.ModelProto, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    feeds = dict(zip(names, inputs))
    try:
        return _onnxruntime(model, feeds), "onnxruntime"
    except Exception as e:
        ort_error, ir_too_new = _one_line(e), "IR version" in str(e)
    if ir_too_new:
        # An onnxruntime older than the onnx that wrote the model (the GPU host's): the same model declared with
        # the lowest IR version its opsets need, which is all an IR version says about the graph.
        older = onnx.ModelProto()
        older.CopyFrom(model)
        older.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
        try:
            return _onnxruntime(older, feeds), "onnxruntime"
        except Exception as e:
            ort_error = _one_line(e)
    try:
        from onnx.reference import ReferenceEvaluator

        outs = ReferenceEvaluator(model).run(None, feeds)
        return [np.asarray(o) for o in outs], "onnx.reference"
    except Exception as e:
        raise ReferenceFailed(f"reference failed (onnxruntime: {ort_error}; onnx.reference: {_one_line(e)})") from None


def _onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
