"""The one place TensorRT's public headers are found.

TENSORRT_INCLUDE_DIR (a folder with NvInferRuntime.h; TensorRT 10.x or 11.x) wins.
Otherwise the TensorRT 10.14 public headers
(Apache-2.0) shipped in the PyPI wheel kernel-lens==2.0.1 are downloaded once into the cache. Nothing is linked:
a plugin library needs the headers only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from opforge.core.errors import OpforgeError

HEADER_WHEEL = "kernel-lens==2.0.1"
_WHEEL_DIR = "kernel_lens/include/tensorrt/"
_MARKER = "NvInferRuntime.h"


def trt_include_dir(cache_dir: Path | None = None) -> Path:
    env = os.environ.get("TENSORRT_INCLUDE_DIR")
    if env:
        p = Path(env)
        if not (p / _MARKER).is_file():
            raise OpforgeError(f"TENSORRT_INCLUDE_DIR={env} has no {_MARKER}")
        return p
    from opforge.core.cache import default_cache_dir

    target = (cache_dir or default_cache_dir()) / "tensorrt-include-10.14"
    if (target / _MARKER).is_file():
        return target
    return _download(target)


_VERSION_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)\s+(\w+)", re.MULTILINE)


def trt_headers_version(include_dir: Path | None = None) -> tuple[int, int, int]:
    """(major, minor, patch) of the TensorRT headers a build uses (default: trt_include_dir()), read from
    NvInferVersion.h's NV_TENSORRT_MAJOR/MINOR/PATCH (which 10.x and 11.x define through TRT_*_ENTERPRISE).
    A built library records the same in its kOpforgeBuildInfo string (`strings LIB | grep opforge-build`)."""
    path = (include_dir or trt_include_dir()) / "NvInferVersion.h"
    if not path.is_file():
        raise OpforgeError(f"{path} not found: not a TensorRT include folder")
    defines = dict(_VERSION_DEFINE.findall(path.read_text(errors="replace")))

    def value(name: str) -> int:
        seen = set()
        v = defines.get(name, "")
        while v in defines and v not in seen:  # NV_TENSORRT_MAJOR -> TRT_MAJOR_ENTERPRISE -> 11
            seen.add(v)
            v = defines[v]
        if not v.isdigit():
            raise OpforgeError(f"{path}: cannot read {name}")
        return int(v)

    return value("NV_TENSORRT_MAJOR"), value("NV_TENSORRT_MINOR"), value("NV_TENSORRT_PATCH")


def _download(target: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
                tmp,
                HEADER_WHEEL,
            ],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            reason = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise OpforgeError(
                f"TensorRT headers not found: set TENSORRT_INCLUDE_DIR to your TensorRT include folder "
                f"(downloading {HEADER_WHEEL} failed: {reason})"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".trt-include-", dir=target.parent))
        with zipfile.ZipFile(wheels[0]) as z:
            for name in z.namelist():
                if name.startswith(_WHEEL_DIR) and name.endswith(".h"):
                    (staging / Path(name).name).write_bytes(z.read(name))
    if not (staging / _MARKER).is_file():
        raise OpforgeError(f"{HEADER_WHEEL} holds no {_MARKER}: set TENSORRT_INCLUDE_DIR")
    try:
        os.replace(staging, target)  # atomic: a concurrent build sees all headers or none
    except OSError:  # another run put them there first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        if not (target / _MARKER).is_file():
            raise
    return target
