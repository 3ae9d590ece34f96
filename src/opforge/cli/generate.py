"""`opforge generate`: plugins for selected nodes (opforge.generate)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opforge.cli import args as a
from opforge.cli.output import say
from opforge.core.errors import EXIT_OK, UsageError

HELP = "generate and build plugins for selected nodes"


def add_parser(sub, common: argparse.ArgumentParser, epilog: str) -> None:
    g = sub.add_parser(
        "generate", parents=[common], help=HELP, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g.add_argument("model", nargs="?", type=Path, help="input ONNX model (never modified)")
    g.add_argument("--example", action="store_true", help="use the built-in example model (all rejected nodes)")
    a.add_output(g)
    a.add_selection(g)
    g.add_argument("-p", "--plugin-names", default=None, help='JSON {"node name": "plugin name"}')
    a.add_shapes(g)
    a.add_dynamic_batch(g)
    a.add_fuse(g)
    a.add_force(g)
    g.add_argument("--library-per-plugin", action="store_true", help="one .so per plugin instead of one per model")


def plugin_names(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    try:
        names = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--plugin-names is not JSON: {e.msg}") from None
    if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
        raise UsageError('--plugin-names must be a JSON object {"node name": "plugin name"}')
    return names


def run(args: argparse.Namespace) -> int:
    from opforge.generate import generate

    if args.example == (args.model is not None):
        raise UsageError("give either a model or --example")
    names = plugin_names(args.plugin_names)
    model = args.model
    nodes, types = list(args.nodes), list(args.types)
    loaded, extra = None, None
    if args.example:
        from opforge.examples.example_model import REJECTED_OP_TYPES, example_model

        model = args.output / "example.onnx"  # written with the run's files, owned like them
        loaded = example_model()
        extra = {model.name: loaded.SerializeToString()}
        types = types or list(REJECTED_OP_TYPES)
    if not (nodes or types or names):
        raise UsageError("select nodes with -n NAMES, -t TYPES or -p JSON")
    result = generate(
        model,
        args.output,
        nodes,
        types,
        names,
        a.input_shapes(args),
        a.dynamic_batch(args),
        args.library_per_plugin,
        progress=say(args),
        fuse=args.fuse,
        force=args.force,
        model=loaded,
        extra_files=extra,
    )
    summary = {
        "model": str(result.model),
        "libraries": [str(p) for p in result.libraries],
        "manifest": str(result.manifest),
        "plugins": [
            {"name": s.name, "op_type": s.plan.op_type, "nodes": s.nodes, "kernels": len(s.plan.launches)}
            for s in result.plugins
        ],
    }
    if args.json:
        print(json.dumps(summary, indent=1))
        return EXIT_OK
    if not args.quiet:
        print(f"{'plugin':32s} {'op':20s} {'kernels':>7s}  nodes")
        for p in summary["plugins"]:
            print(f"{p['name']:32s} {p['op_type']:20s} {p['kernels']:>7d}  {', '.join(p['nodes'])}")
        lib = summary["libraries"][0]
        print(f"\nrewritten model: {result.model}\nplugin library:  {', '.join(summary['libraries'])}")
        print(f"\nverify on a GPU:     opforge verify {args.output}")
        print(f"load into TensorRT:  trtexec --onnx={result.model} --dynamicPlugins={lib}")
        print("                     (Python: builder.get_plugin_registry().load_library(path))")
    return EXIT_OK
