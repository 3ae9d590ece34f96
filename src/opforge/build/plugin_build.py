"""Compiling emitted sources into one plugin library (.so): nvcc per translation unit, in parallel, then one link.

No libnvinfer is linked: TensorRT resolves the library's entry points (getCreators, setLoggerFinder) itself, and
they are the library's only dynamic symbols (-fvisibility=hidden).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from opforge.build.nvcc import find_nvcc, gencode_flags, parallel, run_nvcc
from opforge.build.trt_headers import trt_include_dir
from opforge.fsutil import atomic_write_bytes, atomic_write_text

CXX_FLAGS = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC", "-Xcompiler", "-Wno-deprecated-declarations"]
# A plugin library exports only its entry points (marked OPFORGE_EXPORT in library.cpp.j2): everything else,
# inline functions and template instances included, stays inside the library.
VISIBILITY_FLAGS = ["-Xcompiler", "-fvisibility=hidden", "-Xcompiler", "-fvisibility-inlines-hidden"]
PLUGIN_FLAGS = [*CXX_FLAGS, *VISIBILITY_FLAGS]
# libstdc++'s templates keep default visibility whatever the flags (their instances, e.g. std::vector<double>
# members, would be exported as weak or GNU-unique symbols): the linker's version script makes them local too.
ENTRY_POINTS = ("getCreators", "setLoggerFinder")
EXPORTS_MAP = "{\n  global:\n" + "".join(f"    {name};\n" for name in ENTRY_POINTS) + "  local:\n    *;\n};\n"


def compile_objects(
    sources: list[Path], obj_dir: Path, arch: str, include_dirs: list[Path], cache_dir: Path | None = None
) -> list[Path]:
    """nvcc -c per source, in parallel. With cache_dir, an object is reused when its source, the headers next to
    it and the flags are unchanged (keyed by content hash), so re-runs and interrupted runs skip finished work."""
    obj_dir.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{d}" for d in include_dirs]

    def one(src: Path) -> Path:
        obj = obj_dir / (src.name + ".o")
        device = gencode_flags(arch) if src.suffix == ".cu" else []
        args = ["-c", *PLUGIN_FLAGS, *device, *includes]
        cached = None
        if cache_dir is not None:
            # The source's own folder changes from build to build; its headers are hashed by content instead.
            other = [str(d) for d in include_dirs if d.resolve() != src.parent.resolve()]
            h = hashlib.sha256(" ".join([find_nvcc(), *PLUGIN_FLAGS, *device, *other]).encode())
            for f in [src, *sorted(src.parent.glob("*.h"))]:
                h.update(f.read_bytes())
            cached = cache_dir / f"{h.hexdigest()[:24]}.o"
            if cached.is_file():
                shutil.copyfile(cached, obj)
                return obj
        run_nvcc([*args, "-o", str(obj), str(src)], src.name)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cached, obj.read_bytes())
        return obj

    return parallel(sources, one)


def build_library(
    files: dict[str, list[Path]], out: Path, arch: str = "sm_90", cache_dir: Path | None = None, unity: bool = False
) -> Path:
    """Compile the sources listed by opforge.emit.plugin_cpp.write_sources and link `out` atomically.
    unity=True compiles all host-only TUs (plugins and library) as one, which parses TensorRT's headers once:
    much faster for libraries of many plugins."""
    src_dir = files["library"][0].parent
    host = [*files["plugins"], *files["library"]]
    if unity:
        unity_tu = src_dir / "opforge_unity.cpp"
        atomic_write_text(unity_tu, "".join(f'#include "{p.name}"\n' for p in host))
        host = [unity_tu]
    objects = compile_objects(
        [*files["kernels"], *host],
        src_dir / "obj",
        arch,
        [trt_include_dir(), src_dir],
        cache_dir,
    )
    exports = src_dir / "opforge_exports.map"
    atomic_write_text(exports, EXPORTS_MAP)
    tmp = out.with_name(f".{out.name}.tmp")
    link = ["-shared", *gencode_flags(arch), f"-Xlinker=--version-script={exports}"]
    run_nvcc([*link, "-o", str(tmp), *map(str, objects), "-ldl"], out.name)
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
