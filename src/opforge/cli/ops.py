"""`opforge ops`: what opforge does for every ONNX op type (from the op registry, opforge.ops)."""

from __future__ import annotations

import argparse
import json
import sys

from opforge.core.errors import EXIT_OK


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    o = sub.add_parser(
        "ops", parents=[common], help="every ONNX op type: how opforge lowers it, its input domain, its conformance"
    )
    o.add_argument("types", nargs="*", help="only these op types")
    o.add_argument("--markdown", action="store_true", help="the table as Markdown (docs/ops.md is made this way)")


def run(args: argparse.Namespace) -> int:
    from opforge.ops.table import markdown, op_table

    rows = op_table(only=set(args.types) or None)
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.markdown:
        sys.stdout.write(markdown(rows))
    else:
        print(f"{'op type':32s} {'domain':26s} {'lowering':14s} {'inputs':7s} {'torch':6s} {'conformance':11s}")
        for r in rows:
            conf = f"{r['conformance']['pass']}/{r['conformance']['eligible']}" if r["conformance"] else "-"
            print(
                f"{r['op_type']:32s} {r['domain'] or 'ai.onnx':26s} {r['lowering']:14s} "
                f"{'yes' if r['input_domain'] else '-':7s} {'yes' if r['torch'] else '-':6s} {conf:11s}"
            )
    return EXIT_OK
