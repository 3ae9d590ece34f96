"""Every dtype map in one place: ONNX element type <-> numpy <-> TVM <-> CUDA C <-> TensorRT."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto


@dataclass(frozen=True)
class DType:
    name: str  # canonical name, the one TVM uses ("float32", "int64", ...)
    onnx: int  # TensorProto element type
    numpy: str  # numpy dtype name ("bfloat16" needs ml_dtypes)
    ctype: str  # CUDA C type name in TVM-generated kernels
    trt: str | None  # nvinfer1::DataType enumerator, None where a TensorRT tensor cannot hold it
    itemsize: int
    ctypes: str  # ctypes type of a scalar kernel argument of this dtype


_TABLE = [
    DType("float32", TensorProto.FLOAT, "float32", "float", "kFLOAT", 4, "c_float"),
    DType("float16", TensorProto.FLOAT16, "float16", "half", "kHALF", 2, "c_uint16"),
    DType("bfloat16", TensorProto.BFLOAT16, "bfloat16", "nv_bfloat16", "kBF16", 2, "c_uint16"),
    DType("float64", TensorProto.DOUBLE, "float64", "double", None, 8, "c_double"),
    DType("int8", TensorProto.INT8, "int8", "int8_t", "kINT8", 1, "c_int8"),
    DType("uint8", TensorProto.UINT8, "uint8", "uint8_t", "kUINT8", 1, "c_uint8"),
    DType("int16", TensorProto.INT16, "int16", "int16_t", None, 2, "c_int16"),
    DType("uint16", TensorProto.UINT16, "uint16", "uint16_t", None, 2, "c_uint16"),
    DType("int32", TensorProto.INT32, "int32", "int32_t", "kINT32", 4, "c_int32"),
    DType("uint32", TensorProto.UINT32, "uint32", "uint32_t", None, 4, "c_uint32"),
    DType("int64", TensorProto.INT64, "int64", "int64_t", "kINT64", 8, "c_int64"),
    DType("uint64", TensorProto.UINT64, "uint64", "uint64_t", None, 8, "c_uint64"),
    DType("bool", TensorProto.BOOL, "bool", "bool", "kBOOL", 1, "c_bool"),
]

_BY_NAME = {d.name: d for d in _TABLE}
_BY_ONNX = {d.onnx: d for d in _TABLE}


def by_name(name: str) -> DType:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"dtype {name!r} is not supported by opforge") from None


def from_onnx(elem_type: int) -> DType:
    try:
        return _BY_ONNX[elem_type]
    except KeyError:
        label = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else elem_type
        raise KeyError(f"ONNX element type {label} is not supported by opforge") from None


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(by_name(name).numpy)


def from_numpy(dt: np.dtype) -> DType:
    dt = np.dtype(dt)
    return by_name("bfloat16" if dt.name == "bfloat16" else dt.name)
