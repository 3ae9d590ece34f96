#!/usr/bin/env python3
"""`opforge auto` on the built-in example: generate and build on the CPU machine, verify and time on the GPU,
and keep the report.

  python scripts/auto_example.py build .gpu_bundle/auto          # CPU: opforge auto ... --verify never
  python scripts/auto_example.py run .gpu_bundle/auto OUT        # GPU: opforge verify (completes the report)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    cmd, bundle = sys.argv[1], Path(sys.argv[2])
    opforge = [sys.executable, "-m", "opforge.cli"]
    if cmd == "build":
        bundle.mkdir(parents=True, exist_ok=True)
        subprocess.run([*opforge, "example", str(bundle / "example.onnx")], check=True)
        return subprocess.run(
            [
                *opforge,
                "auto",
                str(bundle / "example.onnx"),
                "-o",
                str(bundle / "out"),
                "--dynamic-batch",
                "1,7,64",
                "--verify",
                "never",
                "-q",
            ]
        ).returncode
    out = Path(sys.argv[3]) / "auto-example"
    rc = subprocess.run([*opforge, "verify", str(bundle / "out")]).returncode
    out.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "report.html", "report.svg", "report.json"):
        shutil.copy(bundle / "out" / name, out / name)  # $OUT returns at most 8 files: run this one alone
    return rc


if __name__ == "__main__":
    sys.exit(main())
