"""How commands talk to the user: progress on stderr, tables on stdout."""

from __future__ import annotations

import argparse
import sys


def say(args: argparse.Namespace):
    """A progress printer (silent with --quiet or --json)."""
    if args.quiet or args.json:
        return lambda msg: None
    return lambda msg: print(f"opforge: {msg}", file=sys.stderr)


def rows_table(rows: list[dict], key: str) -> None:
    """PASS/FAIL lines of verify/check rows."""
    for r in rows:
        runs = r.get("runs", [])
        status = "PASS" if r.get("ok") else "FAIL"
        err = max((o["max_abs_err"] for run in runs for o in run.get("outputs", [])), default=float("nan"))
        dims = ", ".join(str(run.get("dims")) for run in runs)
        print(f"{status}  {r[key]:32s} {r['op_type']:18s} max|err| {err:9.3g}  {dims}")
        for run in runs:
            if "error" in run:
                print(f"      {run['error']}")
        if "error" in r:
            print(f"      {r['error']}")
