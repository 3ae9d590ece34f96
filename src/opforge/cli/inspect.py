"""`opforge inspect`: the nodes TensorRT's parser rejects, and whether opforge can make plugins of them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opforge.cli import args as a
from opforge.cli.output import say
from opforge.core.errors import EXIT_OK


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    i = sub.add_parser(
        "inspect", parents=[common], help="nodes TensorRT's parser rejects, and whether opforge can help"
    )
    i.add_argument("model", type=Path)
    a.add_shapes(i)
    i.add_argument("--no-lowering", action="store_true", help="do not try lowering the rejected nodes (faster)")
    i.add_argument("--wide", action="store_true", help="whole names and reasons (the table cuts them to fit)")


def run(args: argparse.Namespace) -> int:
    from opforge.inspect_model import inspect_model

    report = inspect_model(args.model, a.input_shapes(args), not args.no_lowering, say(args))
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
        return EXIT_OK
    print(f"{args.model}: {report.nodes} nodes; parser: {report.parser}")
    for m in report.model_errors:
        print(f"The parser fails the model as a whole: {m.reason}\n  {m.note}")
    if not report.rejected:
        print("TensorRT's parser accepts every node." if not report.model_errors else "No node is rejected.")
    else:
        print(f"\n{'#':>5}  {'node':28s} {'op':20s} {'plugin':7s} reason")
        for r in report.rejected:
            plug = "yes" if r.plugin else "no" if r.plugin is False else "?"
            if args.wide:
                print(f"{r.index:>5}  {r.name:28s} {r.op_type:20s} {plug:7s} {r.reason}")
            else:
                print(f"{r.index:>5}  {r.name[:28]:28s} {r.op_type[:20]:20s} {plug:7s} {_cut(r.reason, 70)}")
            if r.plugin is False and (args.verbose or args.wide):
                print(f"{'':36s}{r.plugin_note}")
    if report.rejected and not args.wide and any(len(r.reason) > 70 for r in report.rejected):
        print("(reasons cut to fit: --wide shows them whole, --json gives everything)")
    if report.subgraphs:
        ok = [s for s in report.subgraphs if s["supported"]]
        print(
            f"\npartition: {len(report.subgraphs)} subgraph(s), {len(ok)} supported by TensorRT "
            f"({sum(s['nodes'] for s in ok)} of {report.nodes} nodes)"
        )
    return EXIT_OK


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
