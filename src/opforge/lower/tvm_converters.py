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
    from tvm import relax, tirx, topi
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

    class NonZero(OnnxOpConverter):
        """Indices of the non-zero elements, [rank, K] int64 with K data-dependent (opforge's kernel: TVM's frontend
        gives a run-time nonzero whose output size no plan can express)."""

        @classmethod
        def _impl_v9(cls, bb, inputs, attr, params):
            from opforge.lower.kernels import data_dependent as dd

            x = inputs[0]
            if x.ty.ndim < 1:
                raise ValueError("NonZero of a 0-d tensor is not supported")
            out = bb.emit_te(dd.nonzero_te, x, primfunc_name_hint="nonzero")
            return dd.bounded(bb, bb.emit(relax.TupleGetItem(out, 0)), bb.emit(relax.TupleGetItem(out, 1)), 1)

    class Compress(OnnxOpConverter):
        """Compress by a run-time condition (a constant one is a Gather, opforge.ops.compress): the selected
        extent is data-dependent."""

        @classmethod
        def _impl_v9(cls, bb, inputs, attr, params):
            from opforge.lower.kernels import data_dependent as dd

            x, cond = inputs
            if cond.ty.ndim != 1:
                raise ValueError("Compress's condition must be 1-D")
            axis = attr.get("axis")
            if axis is not None:
                axis = int(axis) % x.ty.ndim
            out = bb.emit_te(dd.compress_te, x, cond, axis, primfunc_name_hint="compress")
            return dd.bounded(bb, bb.emit(relax.TupleGetItem(out, 0)), bb.emit(relax.TupleGetItem(out, 1)), axis or 0)

    class Unique(OnnxOpConverter):
        """Unique (sorted or in order of first occurrence, flattened or along an axis): the number of distinct
        elements or slices is data-dependent; inverse_indices has the input's extent."""

        @classmethod
        def _impl_v11(cls, bb, inputs, attr, params):
            from opforge.lower.kernels import data_dependent as dd

            x = inputs[0]
            axis = attr.get("axis")
            if axis is not None:
                axis = int(axis) % x.ty.ndim
            n_out = attr["tvm_custom"]["num_outputs"]
            out = bb.emit_te(dd.unique_te, x, axis, bool(attr.get("sorted", 1)), primfunc_name_hint="unique")
            part = [bb.emit(relax.TupleGetItem(out, k)) for k in range(5)]
            size = part[4]
            results = [
                dd.bounded(bb, part[0], size, axis or 0),
                dd.bounded(bb, part[1], size, 0),
                part[2],
                dd.bounded(bb, part[3], size, 0),
            ][:n_out]
            return results[0] if n_out == 1 else relax.Tuple(results)

    class NonMaxSuppression(OnnxOpConverter):
        """NonMaxSuppression, ONNX's reference semantics: [K, 3] selected (batch, class, box) rows, K data-dependent.
        max_output_boxes_per_class must be a constant (it bounds the output); the thresholds may be run-time."""

        @classmethod
        def _impl_v10(cls, bb, inputs, attr, params):
            from opforge.lower.kernels import data_dependent as dd

            boxes, scores = inputs[0], inputs[1]
            rest = [*inputs[2:], None, None, None][:3]
            max_out = rest[0]
            if max_out is None:
                limit = 0
            elif type(max_out).__name__ in ("Constant", "GenericConst"):
                values = max_out.value.numpy().reshape(-1)
                limit = max(int(values[0]), 0) if values.size else 0
            else:
                raise ValueError("max_output_boxes_per_class must be a constant (it bounds the output size)")
            center = bool(attr.get("center_point_box", 0))
            out = bb.emit_te(dd.nms_te, boxes, scores, rest[1], rest[2], limit, center, primfunc_name_hint="nms")
            return dd.bounded(bb, bb.emit(relax.TupleGetItem(out, 0)), bb.emit(relax.TupleGetItem(out, 1)), 0)

    class CumSum(OnnxOpConverter):
        """CumSum along the last axis of a static shape: opforge's chunked block scan (lower/kernels/scan.py),
        exclusive and reverse read in its index map; other axes and shapes: TVM's converter."""

        @classmethod
        def _impl_v11(cls, bb, inputs, attr, params):
            from tvm.relax.frontend.onnx import onnx_frontend

            from opforge.lower.kernels import scan

            x, axis_in = inputs[0], inputs[1]
            axis = None
            const = onnx_frontend.get_constant(axis_in, params)
            if type(const).__name__ in ("Constant", "GenericConst"):
                values = const.value.numpy().reshape(-1)
                axis = int(values[0]) % x.ty.ndim if values.size == 1 else None
            shape = getattr(x.ty.shape, "values", None)
            if axis is None or shape is None or not scan.supported(list(shape), axis):
                return onnx_frontend.CumSum._impl_v14(bb, inputs, attr, params)
            exclusive, reverse = bool(attr.get("exclusive", 0)), bool(attr.get("reverse", 0))
            return bb.emit_te(scan.cumsum_te, x, exclusive, reverse, primfunc_name_hint="cumsum")

    class TopK(OnnxOpConverter):
        """TopK along the last axis of a static shape with a constant k <= 1024: opforge's kernel (a bitonic sort
        of short rows, a radix select of long ones: lower/kernels/topk.py); otherwise TVM's converter (a full sort
        of every row)."""

        @classmethod
        def _ours(cls, bb, x, k, attr):
            from opforge.lower.kernels import topk

            axis = int(attr.get("axis", -1)) % x.ty.ndim
            shape = getattr(x.ty.shape, "values", None)
            if k is None or shape is None or not topk.supported(list(shape), axis, k, str(x.ty.dtype)):
                return None
            out = bb.emit_te(topk.topk_te, x, k, bool(attr.get("largest", 1)), primfunc_name_hint="topk")
            return relax.Tuple([bb.emit(relax.TupleGetItem(out, 0)), bb.emit(relax.TupleGetItem(out, 1))])

        @classmethod
        def _k_input(cls, inputs, params) -> int | None:
            from tvm.relax.frontend.onnx import onnx_frontend

            const = onnx_frontend.get_constant(inputs[1], params)
            if type(const).__name__ not in ("Constant", "GenericConst"):
                return None
            values = const.value.numpy().reshape(-1)
            return int(values[0]) if values.size == 1 else None

        @classmethod
        def _impl_v1(cls, bb, inputs, attr, params):
            from tvm.relax.frontend.onnx import onnx_frontend

            ours = cls._ours(bb, inputs[0], int(attr.get("k", 1)), {**attr, "largest": 1})
            return ours if ours is not None else onnx_frontend.TopK._impl_v1(bb, inputs, attr, params)

        @classmethod
        def _impl_v10(cls, bb, inputs, attr, params):
            from tvm.relax.frontend.onnx import onnx_frontend

            ours = cls._ours(bb, inputs[0], cls._k_input(inputs, params), {**attr, "largest": 1})
            return ours if ours is not None else onnx_frontend.TopK._impl_v11(bb, inputs, attr, params)

        @classmethod
        def _impl_v11(cls, bb, inputs, attr, params):
            from tvm.relax.frontend.onnx import onnx_frontend

            ours = cls._ours(bb, inputs[0], cls._k_input(inputs, params), attr)
            return ours if ours is not None else onnx_frontend.TopK._impl_v11(bb, inputs, attr, params)

    class GroupNormalization(OnnxOpConverter):
        """GroupNormalization of a static shape: one layer-normalization-shaped kernel over the (N, G, M) view
        (lower/kernels/group_norm.py); scale and bias per group in opset 18, per channel from 21. Otherwise TVM's
        converter."""

        @classmethod
        def _ours(cls, bb, inputs, attr, per_channel: bool):
            from opforge.lower.kernels import group_norm

            x, scale, bias = inputs[0], inputs[1], inputs[2]
            shape = getattr(x.ty.shape, "values", None)
            groups = int(attr["num_groups"])
            scale_shape = getattr(scale.ty.shape, "values", None)
            scale_len = int(scale_shape[0]) if scale_shape is not None and len(scale_shape) == 1 else None
            if shape is None or not group_norm.supported(list(shape), groups, scale_len):
                return None
            dims = [int(d) for d in shape]
            spatial = 1
            for d in dims[2:]:
                spatial *= d
            cpg = dims[1] // groups
            rows = bb.emit(relax.op.reshape(x, [dims[0], groups, cpg * spatial]))
            eps = float(attr.get("epsilon", 1e-5))
            out = bb.emit_te(
                group_norm.group_norm_te,
                rows,
                scale,
                bias,
                eps,
                cpg,
                spatial,
                per_channel,
                primfunc_name_hint="group_norm",
            )
            return bb.emit(relax.op.reshape(out, dims))

        @classmethod
        def _impl_v18(cls, bb, inputs, attr, params):
            from tvm.relax.frontend.onnx import onnx_frontend

            ours = cls._ours(bb, inputs, attr, per_channel=False)
            return ours if ours is not None else onnx_frontend.GroupNormalization._impl_v18(bb, inputs, attr, params)

        @classmethod
        def _impl_v21(cls, bb, inputs, attr, params):
            from tvm.relax.frontend.onnx import onnx_frontend

            ours = cls._ours(bb, inputs, attr, per_channel=True)
            return ours if ours is not None else onnx_frontend.GroupNormalization._impl_v21(bb, inputs, attr, params)

    class ReduceLogSumExp(OnnxOpConverter):
        """ReduceLogSumExp over trailing axes of a static shape: one softmax-shaped kernel
        (lower/kernels/logsumexp.py). Other axes, dynamic shapes, empty reductions: TVM's converter."""

        @classmethod
        def _ours(cls, bb, x, axes, keepdims):
            from opforge.lower.kernels import logsumexp

            shape = getattr(x.ty.shape, "values", None)
            if shape is None:
                return None
            axes = list(range(len(shape))) if axes is None else [int(a) for a in axes]
            if not logsumexp.supported(list(shape), axes):
                return None
            return bb.emit_te(logsumexp.logsumexp_te, x, len(axes), bool(keepdims), primfunc_name_hint="logsumexp")

        @classmethod
        def _impl_v13(cls, bb, inputs, attr, params):
            from tvm.relax.frontend.onnx import onnx_frontend

            ours = cls._ours(bb, inputs[0], attr.get("axes"), attr.get("keepdims", 1))
            return ours if ours is not None else onnx_frontend.ReduceLogSumExp._impl_v13(bb, inputs, attr, params)

        @classmethod
        def _impl_v18(cls, bb, inputs, attr, params):
            from tvm.relax.frontend.onnx import onnx_frontend

            axes = None
            if len(inputs) > 1 and inputs[1] is not None:
                const = onnx_frontend.get_constant(inputs[1], params)
                if type(const).__name__ not in ("Constant", "GenericConst"):
                    return onnx_frontend.ReduceLogSumExp._impl_v18(bb, inputs, attr, params)
                axes = const.value.numpy().reshape(-1).tolist()
            if not axes and attr.get("noop_with_empty_axes", 0):
                return onnx_frontend.ReduceLogSumExp._impl_v18(bb, inputs, attr, params)
            ours = cls._ours(bb, inputs[0], axes or None, attr.get("keepdims", 1))
            return ours if ours is not None else onnx_frontend.ReduceLogSumExp._impl_v18(bb, inputs, attr, params)

    class InstanceNormalization(OnnxOpConverter):
        """InstanceNormalization of a static shape: GroupNormalization with one channel per group (one kernel,
        lower/kernels/group_norm.py). Otherwise TVM's converter."""

        @classmethod
        def _impl_v6(cls, bb, inputs, attr, params):
            from tvm.relax.frontend.onnx import onnx_frontend

            shape = getattr(inputs[0].ty.shape, "values", None)
            channels = shape[1] if shape is not None and len(shape) >= 2 else None
            ours = None
            if channels is not None and isinstance(channels, tirx.IntImm):
                ours = GroupNormalization._ours(bb, inputs, {**attr, "num_groups": int(channels)}, per_channel=True)
            return ours if ours is not None else onnx_frontend.InstanceNormalization._impl_v6(bb, inputs, attr, params)

    class MatMulInteger(OnnxOpConverter):
        """2-D 8-bit operands with K a multiple of 4: packed bytes multiplied with __dp4a, the zero points applied
        exactly afterwards (lower/kernels/integer_matmul.py). Otherwise TVM's converter (both widened to int32).
        Zero points: scalars, per row of A ([M]) or per column of B ([N])."""

        @classmethod
        def _impl_v10(cls, bb, inputs, attr, params):
            from tvm.relax.frontend.onnx import onnx_frontend

            from opforge.lower.kernels import integer_matmul as im

            a, b = inputs[0], inputs[1]
            eight_bit = all(str(x.ty.dtype) in ("int8", "uint8") for x in (a, b))
            a_shape, b_shape = (getattr(getattr(x.ty, "shape", None), "values", None) for x in (a, b))
            if not eight_bit or a_shape is None or b_shape is None or not im.supported(a_shape, b_shape):
                return onnx_frontend.MatMulInteger._impl_v10(bb, inputs, attr, params)
            zeros = [inputs[i] if len(inputs) > i and inputs[i] is not None else None for i in (2, 3)]

            def shifted(x, zero, vector_axis: int):
                """(x as int8, the int32 offset from it to x - zero)."""
                unsigned = str(x.ty.dtype) == "uint8"
                x8 = x
                if unsigned:
                    wide = relax.op.subtract(relax.op.astype(x, "int16"), relax.const(128, "int16"))
                    x8 = relax.op.astype(wide, "int8")
                offset = relax.const(128 if unsigned else 0, "int32")
                if zero is not None:
                    z = bb.normalize(relax.op.astype(zero, "int32"))
                    if z.ty.ndim == 1:
                        z = relax.op.expand_dims(z, axis=vector_axis)
                    offset = relax.op.subtract(offset, z)
                return bb.normalize(x8), bb.normalize(offset)

            a8, ca = shifted(a, zeros[0], -1)
            b8, cb = shifted(b, zeros[1], 0)
            a4 = bb.emit_te(im.pack, a8, -1, "pack_rows", primfunc_name_hint="pack_rows")
            b4 = bb.emit_te(im.pack, b8, -2, "pack_columns", primfunc_name_hint="pack_columns")
            product = bb.emit_te(im.packed_matmul, a4, b4, primfunc_name_hint="matmul_dp4a")
            rows = relax.op.sum(relax.op.astype(a8, "int32"), axis=[-1], keepdims=True)
            cols = relax.op.sum(relax.op.astype(b8, "int32"), axis=[-2], keepdims=True)
            depth = relax.const(int(a_shape[-1]), "int32")
            out = relax.op.add(product, relax.op.multiply(rows, cb))
            out = relax.op.add(out, relax.op.multiply(ca, cols))
            return relax.op.add(out, relax.op.multiply(relax.op.multiply(depth, ca), cb))

    return {
        "MatMulInteger": MatMulInteger,
        "InstanceNormalization": InstanceNormalization,
        "ReduceLogSumExp": ReduceLogSumExp,
        "GroupNormalization": GroupNormalization,
        "BitCast": BitCast,
        "CumSum": CumSum,
        "TopK": TopK,
        "NonZero": NonZero,
        "Compress": Compress,
        "Unique": Unique,
        "NonMaxSuppression": NonMaxSuppression,
    }
