"""Converters opforge adds to TVM's ONNX frontend for ops it lacks that no ONNX rewrite can express.

TVM 0.27's frontend looks its converters up through `onnx_frontend._get_convert_map()` on every node; `install()`
wraps that function once so the map also holds these. Each converter follows the ONNX operator documentation and
is checked by the op's conformance cases.
"""

from __future__ import annotations

from opforge.core import dtypes

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from tvm.relax.frontend.onnx import onnx_frontend

    original = onnx_frontend._get_convert_map
    extra = _converters()

    def convert_map():
        return {**original(), **extra}

    convert_map.__wrapped__ = original  # TVM's own converters (the op table reads those)
    onnx_frontend._get_convert_map = convert_map
    _installed = True


def _converters() -> dict:
    from tvm import relax, topi
    from tvm.relax.frontend.onnx.onnx_frontend import OnnxOpConverter

    class BitCast(OnnxOpConverter):
        """Reinterpret the bits as another type of the same width (ONNX BitCast, opset 26)."""

        @classmethod
        def _impl_v26(cls, bb, inputs, attr, params):
            x = inputs[0]
            to = dtypes.from_onnx(int(attr["to"])).name
            src = str(x.ty.dtype)
            if "bool" in (src, to):  # TVM's bool is one bit wide; as bytes, 0 and 1 are the same bits
                return relax.op.astype(x, to)
            return bb.emit_te(topi.reinterpret, x, to)

    return {"BitCast": BitCast}
