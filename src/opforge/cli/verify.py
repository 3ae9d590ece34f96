"""`opforge verify` (plugins through the IPluginV3 harness) and `opforge check` (plans through the CUDA driver
API), both on a GPU against the ONNX reference."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opforge.cli import args as a
from opforge.cli.output import rows_table, say
from opforge.core.errors import EXIT_FAILED, EXIT_OK
from opforge.core.manifest import Manifest


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    for name, helptext in (
        ("check", "GPU: run kernel plans without TVM and compare with the ONNX reference"),
        ("verify", "GPU: run plugins through the IPluginV3 harness and compare with the reference"),
    ):
        c = sub.add_parser(name, parents=[common], help=helptext)
        c.add_argument("output", type=Path, help="an `opforge generate` output folder")
        a.add_dims(c)
        c.add_argument("--plugins", type=a.csv, default=None, help="only these plugins")
    v = sub.choices["verify"]
    v.add_argument(
        "--inputs",
        type=Path,
        default=None,
        metavar="FILE.npz",
        help="verify the whole rewritten model on these inputs (keys: graph input names) against the original model",
    )
    v.add_argument("--whole-model", action="store_true", help="verify the whole rewritten model on random inputs")
    v.add_argument("--model", type=Path, default=None, help="the original model (default: the one manifest.json names)")


def _finish(args: argparse.Namespace, rows: list[dict]) -> int:
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    else:
        rows_table(rows, "plugin")
    return EXIT_OK if rows and all(r["ok"] for r in rows) else EXIT_FAILED


def run_verify_model(args: argparse.Namespace) -> int:
    """The whole rewritten model (plugins through the harness, other nodes through onnxruntime) against the original
    model: a row per graph output and the first diverging node."""
    from opforge.verify.model import format_report, verify_model

    report = verify_model(args.output, args.inputs, dims=args.dims, original=args.model)
    print(json.dumps(report, indent=1, default=str) if args.json else format_report(report))
    return EXIT_OK if report["ok"] else EXIT_FAILED


def run_verify(args: argparse.Namespace) -> int:
    from opforge.runtime.gpu import require_gpu
    from opforge.verify.plugins import verify_folder

    Manifest.load(args.output)  # a folder that is not opforge's: say so before looking for a GPU
    require_gpu("opforge verify")
    if args.inputs or args.whole_model or args.model:
        return run_verify_model(args)

    if (args.output / "report.json").is_file() and not args.dims and not args.plugins:
        # An `opforge auto` folder made on a machine without a GPU: verify, time, and complete its report.
        from opforge.auto import complete_report

        rows = complete_report(args.output, say(args))["verification"]
    else:
        rows = verify_folder(args.output, only=set(args.plugins or []) or None, dim_values=args.dims)
    return _finish(args, rows)


def run_check(args: argparse.Namespace) -> int:
    from opforge.runtime.gpu import require_gpu
    from opforge.verify.plans import check_folder

    Manifest.load(args.output)
    require_gpu("opforge check")

    return _finish(args, check_folder(args.output, set(args.plugins or []) or None, args.dims))
