"""Plugin fields: what a plugin node carries as ONNX attributes, and how TensorRT's ONNX parser hands them over.

TensorRT's parser passes an unknown node's tensor inputs (initializers included) as plugin inputs and its attributes
as PluginFields. A plugin cannot read tensor values when it computes output shapes, so the constant inputs a plan
was specialised for (depth, axes, pads, scales, index tables) become attributes of the rewritten node and leave its
input list. The fields are those attributes; the plugin checks them against the values it was built for.

The parser side (onnx-tensorrt's fallback plugin importer) is mirrored in `parser_fields`: it walks the creator's
getFieldNames(), and for each name that the node has as an attribute passes the value in a field type chosen by
the *attribute's* type (INT/INTS -> kINT32, narrowed from int64 without a range check; FLOAT/FLOATS -> kFLOAT32;
STRING -> kCHAR), whatever type the creator declares. So opforge never writes an INT/INTS attribute the parser would
narrow: integer values outside int32 are written as a STRING of comma-separated decimals (`int64_text`), which the
plugin decodes (FieldEncoding::kINT64_TEXT in opforgePluginCommon.h).
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
    def int64_as_text(self) -> bool:
        """Integer values the parser would narrow (outside int32): carried as decimal text instead."""
        return self.kind == "ints" and not all(_INT32.min <= v <= _INT32.max for v in self.ints)

    @property
    def field_type(self) -> str:
        """The PluginFieldType the plugin declares, which is the one TensorRT's parser passes for the attribute."""
        if self.kind == "string" or self.int64_as_text:
            return "kCHAR"
        return "kFLOAT32" if self.kind == "floats" else "kINT32"

    def onnx_attribute(self) -> onnx.AttributeProto:
        if self.kind == "string":
            return helper.make_attribute(self.name, self.string)
        if self.int64_as_text:
            return helper.make_attribute(self.name, int64_text(self.ints), attr_type=onnx.AttributeProto.STRING)
        if self.kind == "floats":
            if self.scalar:
                return helper.make_attribute(self.name, self.floats[0], attr_type=onnx.AttributeProto.FLOAT)
            return helper.make_attribute(self.name, list(self.floats), attr_type=onnx.AttributeProto.FLOATS)
        if self.scalar:
            return helper.make_attribute(self.name, self.ints[0], attr_type=onnx.AttributeProto.INT)
        return helper.make_attribute(self.name, list(self.ints), attr_type=onnx.AttributeProto.INTS)


def int64_text(values: tuple[int, ...] | list[int]) -> str:
    """Integers as the text a kINT64_TEXT field carries: decimal, comma-separated, no spaces ("1099511627776,-3")."""
    return ",".join(str(int(v)) for v in values)


def parse_int64_text(text: str) -> list[int]:
    """The inverse of int64_text (as the plugin decodes it); ValueError on anything else."""
    if not text:
        return []
    values = []
    for item in text.split(","):
        if not item.lstrip("+-").isdigit():
            raise ValueError(f"not an int64 list: {text!r}")
        v = int(item)
        if not -(2**63) <= v < 2**63:
            raise ValueError(f"{item} is outside int64")
        values.append(v)
    return values


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


# How TensorRT's ONNX parser (onnx-tensorrt, fallback plugin importer) maps an attribute type to a PluginFieldType.
PARSER_FIELD_TYPES = {
    onnx.AttributeProto.INT: "kINT32",
    onnx.AttributeProto.INTS: "kINT32",
    onnx.AttributeProto.FLOAT: "kFLOAT32",
    onnx.AttributeProto.FLOATS: "kFLOAT32",
    onnx.AttributeProto.STRING: "kCHAR",
    onnx.AttributeProto.STRINGS: "kCHAR",
}


def parser_field(attr: onnx.AttributeProto) -> tuple[str, str, bytes, int]:
    """(name, field type, data, length) of one attribute as TensorRT's parser passes it: the type follows the
    attribute's type (not the creator's declaration); INT/INTS are narrowed to int32 by truncation, as the parser's
    static_cast does; STRING is its bytes, NUL-terminated (the length excludes the NUL); STRINGS are concatenated."""
    if attr.type not in PARSER_FIELD_TYPES:
        raise ValueError(
            f"attribute {attr.name!r} of type {onnx.AttributeProto.AttributeType.Name(attr.type)}: opforge never "
            "writes it, and TensorRT's parser maps it to no plugin field here"
        )
    ftype = PARSER_FIELD_TYPES[attr.type]
    v = helper.get_attribute_value(attr)
    if ftype == "kCHAR":
        items = [v] if attr.type == onnx.AttributeProto.STRING else list(v)
        text = b"".join(x if isinstance(x, bytes) else str(x).encode() for x in items)
        return attr.name, ftype, text + b"\0", len(text)
    if ftype == "kINT32":
        arr = np.atleast_1d(np.asarray(v, dtype=np.int64)).astype(np.int32)  # wraps, as static_cast<int32_t>
    else:
        arr = np.atleast_1d(np.asarray(v, dtype=np.float64)).astype(np.float32)
    return attr.name, ftype, arr.tobytes(), int(arr.size)


def parser_fields(node: onnx.NodeProto, declared: list[tuple[str, str]]) -> list[tuple[str, str, bytes, int]]:
    """The fields TensorRT's parser passes to createPlugin for `node`: one per declared field name (the creator's
    getFieldNames(); declared types are not used) that the node has as an attribute, in declaration order."""
    attrs = {a.name: a for a in node.attribute}
    return [parser_field(attrs[name]) for name, _ in declared if name in attrs]
