"""`opforge tune`: build candidate schedules (CPU), measure them (GPU), keep the fastest correct one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opforge.cli import args as a
from opforge.cli.output import say
from opforge.core.errors import EXIT_OK, UsageError


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    t = sub.add_parser(
        "tune",
        parents=[common],
        help="tune nodes' kernels: build candidates (CPU), measure them (GPU), keep the fastest correct one",
        description="One host with a GPU: opforge tune MODEL -o DIR -t OneHot. Across hosts: "
        "opforge tune MODEL -o DIR -t OneHot --export (CPU host, TVM), opforge tune --measure DIR (GPU host, "
        "no TVM), opforge tune --import DIR (CPU host). Later `opforge generate` runs use the records.",
    )
    t.add_argument("model", nargs="?", type=Path)
    t.add_argument("-o", "--output", type=Path, help="folder for the candidate bundles")
    a.add_selection(t)
    a.add_shapes(t)
    a.add_dims(t, "dimension values to tune at")
    a.add_fuse(t)
    t.add_argument("--export", action="store_true", help="build the bundles only (measure on another host)")
    t.add_argument("--measure", type=Path, default=None, metavar="DIR", help="GPU host: measure bundles in DIR")
    t.add_argument("--import", dest="import_", type=Path, default=None, metavar="DIR", help="import measurements")
    t.add_argument("--records", type=Path, default=None, help="records file (default: in the opforge cache)")


def run(args: argparse.Namespace) -> int:
    from opforge.tune.records import TuningRecords

    records = TuningRecords(args.records) if args.records else TuningRecords.default()
    tell = say(args)
    if args.measure is not None:
        from opforge.runtime.gpu import require_gpu
        from opforge.tune.candidates import bundles_under
        from opforge.tune.measure import measure_all

        bundles = bundles_under(args.measure)
        if not bundles:
            raise UsageError(f"--measure {args.measure}: no tuning bundle (tune.json) there")
        require_gpu("opforge tune --measure")
        result = {str(b): [r.__dict__ for r in measure_all(b)] for b in bundles}
        tell(f"measured {sum(len(v) for v in result.values())} candidates in {len(bundles)} bundle(s)")
    elif args.import_ is not None:
        from opforge.tune.tuner import import_measurements

        result = {"imported": import_measurements(args.import_, records), "records": str(records.path)}
        tell(f"imported {result['imported']} measurements into {records.path}")
    else:
        from opforge.tune.tuner import tune_model

        if args.model is None or args.output is None:
            raise UsageError("give MODEL and -o DIR (or --measure DIR / --import DIR)")
        if not (args.nodes or args.types):
            raise UsageError("select nodes with -n NAMES or -t TYPES")
        dims = {k: v[0] for k, v in (args.dims or {}).items()}
        result = tune_model(
            args.model,
            args.output,
            args.nodes,
            args.types,
            a.input_shapes(args),
            dims,
            records,
            not args.export,
            tell,
            fuse=args.fuse,
        )
        for row in result:
            tell(
                f"{row['node']}: best {row.get('best')} ({row.get('best_us')} µs), CPU {row['cpu_s']}s, "
                f"GPU {row.get('gpu_s', '-')}s"
            )
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    return EXIT_OK
