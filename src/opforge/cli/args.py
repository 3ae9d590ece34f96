"""Argument groups shared by several commands, each defined once."""

from __future__ import annotations

import argparse
from pathlib import Path

from opforge.core.errors import UsageError


def csv(text: str) -> list[str]:
    """A comma-separated list, blanks dropped."""
    return [t for t in (s.strip() for s in text.split(",")) if t]


def dims(text: str) -> dict[str, list[int]]:
    """--dims 'batch=1,7,64;seq=128' -> {"batch": [1, 7, 64], "seq": [128]}."""
    out: dict[str, list[int]] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        name, sep, values = item.partition("=")
        try:
            out[name.strip()] = [int(v) for v in values.split(",")]
        except ValueError:
            raise UsageError(f"--dims {text!r}: expected NAME=V1,V2;NAME2=V") from None
        if not sep:
            raise UsageError(f"--dims {text!r}: expected NAME=V1,V2;NAME2=V")
    return out


def common() -> argparse.ArgumentParser:
    """-v / -q / --debug / --json, for every command."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", action="store_true", help="more detail (TVM's own messages included)")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    return p


def add_selection(p: argparse.ArgumentParser, more: bool = False) -> None:
    """-n NAMES / -t TYPES: the nodes to turn into plugins."""
    what = "more " if more else ""
    p.add_argument("-n", "--nodes", type=csv, default=[], help=f"{what}node names, comma separated")
    p.add_argument("-t", "--types", type=csv, default=[], help=f"{what}op types, comma separated")


def add_shapes(p: argparse.ArgumentParser) -> None:
    """--input-shapes: graph input shapes for models that lack them."""
    p.add_argument(
        "--input-shapes",
        default=None,
        metavar="NAME:D0xD1,...",
        help="graph input shapes, e.g. x:1x3x224x224,mask:batchx128 (for models without them)",
    )


def add_dynamic_batch(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dynamic-batch",
        default=None,
        metavar="MIN,OPT,MAX",
        help="make the batch (first) dimension of graph inputs symbolic; the profile to verify with",
    )


def add_output(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("-o", "--output", type=Path, required=required, help="output folder")


def add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty folder opforge did not make, or one holding another model's plugins "
        "(opforge's own earlier files are replaced; no other file is deleted or overwritten)",
    )


def add_dims(p: argparse.ArgumentParser, what: str = "dimension values") -> None:
    p.add_argument("--dims", type=dims, default=None, help=f"{what}, e.g. 'batch=1,7,64'")


def input_shapes(args: argparse.Namespace):
    """The parsed --input-shapes, or None."""
    if not getattr(args, "input_shapes", None):
        return None
    from opforge.extract.subgraph import parse_shape_arg

    return parse_shape_arg(args.input_shapes)


def dynamic_batch(args: argparse.Namespace):
    """The parsed --dynamic-batch, or None."""
    if not getattr(args, "dynamic_batch", None):
        return None
    from opforge.generate import DynamicBatch

    return DynamicBatch.parse(args.dynamic_batch)


def add_fuse(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-fuse",
        dest="fuse",
        action="store_false",
        help="one plugin per node (default: selected nodes that feed each other become one plugin)",
    )
