"""Compiling emitted sources into one plugin library (.so): nvcc per translation unit, in parallel, then one link.

No libnvinfer is linked: TensorRT resolves the library's entry points (getCreators, setLoggerFinder) itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from opforge.build.nvcc import gencode_flags, parallel, run_nvcc
from opforge.build.trt_headers import trt_include_dir

CXX_FLAGS = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC", "-Xcompiler", "-Wno-deprecated-declarations"]


def compile_objects(sources: list[Path], obj_dir: Path, arch: str, include_dirs: list[Path]) -> list[Path]:
    obj_dir.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{d}" for d in include_dirs]

    def one(src: Path) -> Path:
        obj = obj_dir / (src.name + ".o")
        device = gencode_flags(arch) if src.suffix == ".cu" else []
        run_nvcc(["-c", *CXX_FLAGS, *device, *includes, "-o", str(obj), str(src)], src.name)
        return obj

    return parallel(sources, one)


def build_library(files: dict[str, list[Path]], out: Path, arch: str = "sm_90") -> Path:
    """Compile the sources listed by opforge.emit.plugin_cpp.write_sources and link `out` atomically."""
    src_dir = files["library"][0].parent
    objects = compile_objects(
        [*files["kernels"], *files["plugins"], *files["library"]],
        src_dir / "obj",
        arch,
        [trt_include_dir(), src_dir],
    )
    tmp = out.with_name(f".{out.name}.tmp")
    run_nvcc(["-shared", *gencode_flags(arch), "-o", str(tmp), *map(str, objects)], out.name)
    os.replace(tmp, out)
    return out


HARNESS_SOURCE = Path(__file__).resolve().parent.parent / "harness" / "harness.cpp"


def build_harness(out: Path) -> Path:
    """The harness library (opforge.verify.harness loads it): host code only, against the same TensorRT headers."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    run_nvcc(
        ["-shared", *CXX_FLAGS, f"-I{trt_include_dir()}", "-o", str(tmp), str(HARNESS_SOURCE), "-ldl"],
        HARNESS_SOURCE.name,
    )
    os.replace(tmp, out)
    return out
