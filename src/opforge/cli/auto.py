"""`opforge auto`: inspect, then generate, build, verify and report in one go (opforge.auto)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opforge.cli import args as a
from opforge.cli.output import say
from opforge.core.errors import EXIT_FAILED, EXIT_OK


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("auto", parents=[common], help="inspect, then generate, build, verify and report in one go")
    p.add_argument("model", type=Path)
    a.add_output(p)
    a.add_selection(p, more=True)
    a.add_shapes(p)
    a.add_dynamic_batch(p)
    a.add_fuse(p)
    a.add_force(p)
    p.add_argument(
        "--verify",
        choices=("auto", "always", "never"),
        default="auto",
        help="verify on the GPU: when one is present (auto), always, never",
    )


def run(args: argparse.Namespace) -> int:
    from opforge.auto import auto

    result = auto(
        args.model,
        args.output,
        args.nodes,
        args.types,
        a.input_shapes(args),
        a.dynamic_batch(args),
        args.verify,
        say(args),
        fuse=args.fuse,
        force=args.force,
    )
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    elif not args.quiet:
        print((args.output / "report.md").read_text())
    failed = any(not r["ok"] for r in result["verification"] or [])
    return EXIT_FAILED if failed else EXIT_OK
