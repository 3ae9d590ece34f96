"""Reading ONNX models with one-line errors for the ways a file can be wrong."""

from __future__ import annotations

from pathlib import Path

import onnx

from opforge.core.errors import OpforgeError


def load_model(path: str | Path) -> onnx.ModelProto:
    p = Path(path)
    if not p.is_file():
        raise OpforgeError(f"{p}: no such model file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise OpforgeError(f"{p}: not a readable ONNX model ({type(e).__name__}: {_first_line(e)})") from None
    _load_external(model, p)
    if not model.graph.node:
        raise OpforgeError(f"{p}: the graph has no nodes")
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        raise OpforgeError(f"{p}: the model imports no default-domain opset")
    known = onnx.defs.onnx_opset_version()
    if opset_of(model) > known:
        raise OpforgeError(
            f"{p}: opset {opset_of(model)} is newer than this onnx knows ({known}): upgrade onnx or convert the model"
        )
    return model


def _load_external(model: onnx.ModelProto, path: Path) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    tensors = [t for t in model.graph.initializer if uses_external_data(t)]
    if not tensors:
        return
    for t in tensors:
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        if not (path.parent / location).is_file():
            raise OpforgeError(f"{path}: initializer {t.name!r} lives in external file {location!r}, which is missing")
    load_external_data_for_model(model, str(path.parent))


def opset_of(model: onnx.ModelProto) -> int:
    """The model's ai.onnx opset; a model of other domains only (ai.onnx.ml, training) gets the newest one."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), onnx.defs.onnx_opset_version())


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else ""
