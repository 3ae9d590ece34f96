"""`opforge auto`: inspect, then generate, build, verify and report in one go (opforge.auto)."""

from __future__ import annotations

import argparse
import json
import sys
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
    if failed:
        return EXIT_FAILED
    rest = (result.get("after") or {}).get("other_errors", [])
    if rest:  # the model still does not parse: say what stays rejected (report.md has the reasons)
        names = [f"{e.get('node') or '(the model)'} ({e.get('op_type') or e['reason'][:60]})" for e in rest]
        print(
            f"opforge: TensorRT's parser still rejects {len(rest)} thing(s) in the model: {', '.join(names[:8])}"
            f"{' ...' if len(names) > 8 else ''}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK
