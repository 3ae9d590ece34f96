"""Plugin fields: what a plugin node carries as ONNX attributes, and how TensorRT's ONNX parser hands them over.

TensorRT's parser passes an unknown node's tensor inputs (initializers included) as plugin inputs and its attributes
as PluginFields. A plugin cannot read tensor values when it computes output shapes, so the constant inputs a plan
was specialised for (depth, axes, pads, scales, index tables) become attributes of the rewritten node and leave its
input list. The fields are those attributes; the plugin checks them against the values it was built for.

The parser side (onnx-tensorrt's fallback plugin importer) is mirrored in `parser_fields`: it walks the creator's
getFieldNames(), and for each name that the node has as an attribute passes the value converted to the declared
field type. opforge's plugins also accept any numeric field type, so they do not depend on that conversion.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

# nvinfer1::PluginFieldType values (NvInferPluginBase.h, TensorRT 10).
FIELD_TYPES = {
    "kFLOAT16": 0,
    "kFLOAT32": 1,
    "kFLOAT64": 2,
    "kINT8": 3,
    "kINT16": 4,
    "kINT32": 5,
    "kCHAR": 6,
    "kINT64": 10,
}
_FIELD_NUMPY = {
    "kFLOAT16": np.float16,
    "kFLOAT32": np.float32,
    "kFLOAT64": np.float64,
    "kINT8": np.int8,
    "kINT16": np.int16,
    "kINT32": np.int32,
    "kINT64": np.int64,
}

_INT32 = np.iinfo(np.int32)
_NUMERIC = {
    onnx.AttributeProto.INT: ("ints", int),
    onnx.AttributeProto.INTS: ("ints", int),
    onnx.AttributeProto.FLOAT: ("floats", float),
    onnx.AttributeProto.FLOATS: ("floats", float),
}


@dataclass(frozen=True)
class PluginAttr:
    """One attribute of a plugin node, i.e. one plugin field."""

    name: str
    kind: str  # "ints" | "floats" | "string"
    ints: tuple[int, ...] = ()
    floats: tuple[float, ...] = ()
    string: str = ""
    scalar: bool = False  # an INT or FLOAT attribute (one value) rather than a list

    @property
    def field_type(self) -> str:
        if self.kind == "string":
            return "kCHAR"
        if self.kind == "floats":
            return "kFLOAT32"
        fits = all(_INT32.min <= v <= _INT32.max for v in self.ints)
        return "kINT32" if fits else "kINT64"

    def onnx_attribute(self) -> onnx.AttributeProto:
        if self.kind == "string":
            return helper.make_attribute(self.name, self.string)
        if self.kind == "floats":
            if self.scalar:
                return helper.make_attribute(self.name, self.floats[0], attr_type=onnx.AttributeProto.FLOAT)
            return helper.make_attribute(self.name, list(self.floats), attr_type=onnx.AttributeProto.FLOATS)
        if self.scalar:
            return helper.make_attribute(self.name, self.ints[0], attr_type=onnx.AttributeProto.INT)
        return helper.make_attribute(self.name, list(self.ints), attr_type=onnx.AttributeProto.INTS)


def plugin_attrs(node: onnx.NodeProto, constant_inputs: dict[int, np.ndarray], opset: int) -> list[PluginAttr]:
    """The rewritten node's attributes: the node's own, then its constant inputs, flattened."""
    out: list[PluginAttr] = []
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if a.type == onnx.AttributeProto.TENSOR:
            v = numpy_helper.to_array(v).reshape(-1).tolist()
            out.append(_from_values(a.name, v))
        elif a.type == onnx.AttributeProto.STRING:
            out.append(PluginAttr(a.name, "string", string=v.decode() if isinstance(v, bytes) else str(v)))
        elif a.type in _NUMERIC:
            kind, convert = _NUMERIC[a.type]
            values = tuple(convert(x) for x in np.atleast_1d(v))
            scalar = a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT)
            out.append(PluginAttr(a.name, kind, scalar=scalar, **{kind: values}))
        else:
            raise ValueError(
                f"attribute {a.name!r} of type {onnx.AttributeProto.AttributeType.Name(a.type)} "
                "cannot be a plugin field"
            )
    taken = {a.name for a in out}
    names = _input_names(node, opset)
    for pos in sorted(constant_inputs):
        name = names[pos] if pos < len(names) else f"input{pos}"
        while name in taken:
            name = f"{name}_input"
        taken.add(name)
        out.append(_from_values(name, np.asarray(constant_inputs[pos]).reshape(-1).tolist()))
    return out


def group_attrs(nodes: list[onnx.NodeProto], constants: list[dict[int, np.ndarray]], opset: int) -> list[PluginAttr]:
    """A fused plugin's fields: each member's attributes and constant inputs, prefixed n<k>_ by its place in the
    group (so two members' `axis` stay apart)."""
    out: list[PluginAttr] = []
    for k, (node, consts) in enumerate(zip(nodes, constants)):
        for a in plugin_attrs(node, consts, opset):
            out.append(dataclasses.replace(a, name=f"n{k}_{a.name}"))
    return out


def _from_values(name: str, values: list) -> PluginAttr:
    if all(isinstance(v, (bool, int, np.integer, np.bool_)) for v in values):
        return PluginAttr(name, "ints", ints=tuple(int(v) for v in values))
    return PluginAttr(name, "floats", floats=tuple(float(v) for v in values))


def _input_names(node: onnx.NodeProto, opset: int) -> list[str]:
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:
        return [f"input{i}" for i in range(len(node.input))]
    names = [f.name for f in schema.inputs]
    if schema.inputs and schema.inputs[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        base = names[-1]
        names = names[:-1] + [f"{base}{i}" for i in range(len(node.input) - len(names) + 1)]
    return names


def parser_fields(node: onnx.NodeProto, declared: list[tuple[str, str]]) -> list[tuple[str, str, bytes, int]]:
    """(name, field type, data, length) for each declared field the node has, as TensorRT's parser builds them."""
    attrs = {a.name: a for a in node.attribute}
    fields = []
    for name, ftype in declared:
        if name not in attrs:
            continue
        v = helper.get_attribute_value(attrs[name])
        if ftype == "kCHAR":
            s = v if isinstance(v, bytes) else str(v).encode()
            fields.append((name, ftype, s, len(s)))
            continue
        arr = np.atleast_1d(np.asarray(v)).astype(_FIELD_NUMPY[ftype])
        fields.append((name, ftype, arr.tobytes(), int(arr.size)))
    return fields
