"""`opforge example PATH`: write the built-in example model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opforge.core.errors import EXIT_OK


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    e = sub.add_parser("example", parents=[common], help="write the built-in example model")
    e.add_argument("path", type=Path)


def run(args: argparse.Namespace) -> int:
    from opforge.core.fsutil import atomic_write_bytes
    from opforge.examples.example_model import example_model

    atomic_write_bytes(args.path, example_model().SerializeToString())
    if args.json:
        print(json.dumps({"model": str(args.path)}))
    elif not args.quiet:
        print(f"wrote {args.path}")
    return EXIT_OK
