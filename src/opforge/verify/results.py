"""Result files under results/: machine-readable JSON plus a short markdown table, each naming device, date and
the command that produced it."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shlex
import sys
from pathlib import Path

from opforge.core.fsutil import atomic_write_text


def run_metadata(device: str, extra: dict | None = None) -> dict:
    return {
        "device": device,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "host": platform.node(),
        "python": platform.python_version(),
        **(extra or {}),
    }


def write_results(out_dir: Path, stem: str, meta: dict, rows: list[dict], summary: dict, markdown_body: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / f"{stem}.json", json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1))
    head = [
        f"# {stem}",
        "",
        f"- device: {meta['device']}",
        f"- date (UTC): {meta['date_utc']}",
        f"- command: `{meta['command']}`",
    ]
    head += [f"- {k}: {v}" for k, v in meta.items() if k not in ("device", "date_utc", "command", "host", "python")]
    head += ["", "Summary: " + ", ".join(f"{k} = {v}" for k, v in summary.items()), ""]
    atomic_write_text(out_dir / f"{stem}.md", "\n".join(head) + "\n" + markdown_body + "\n")


def bundle_commit() -> str:
    """The commit a GPU bundle is built from (recorded in results, since the GPU machine has no git history), with
    "-dirty" when tracked files differ from it (the results then came from code no commit holds)."""
    import subprocess

    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    commit = proc.stdout.strip() or "unknown"
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return f"{commit}-dirty" if proc.returncode == 0 and status.stdout.strip() else commit


def two_phase_main(doc: str, build, run) -> int:
    """`SCRIPT build BUNDLE` on the CPU machine, `SCRIPT run BUNDLE OUT` on the GPU machine."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build").add_argument("bundle", type=Path)
    r = sub.add_parser("run")
    r.add_argument("bundle", type=Path)
    r.add_argument("out", type=Path)
    a = ap.parse_args()
    if a.cmd == "build":
        return build(a.bundle) or 0
    return run(a.bundle, a.out)
