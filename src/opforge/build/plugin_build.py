"""Compiling emitted sources into one plugin library (.so): nvcc per translation unit, in parallel, then one link.

No libnvinfer is linked: TensorRT resolves the library's entry points (getCreators, setLoggerFinder) itself, and
they are the library's only dynamic symbols (-fvisibility=hidden).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from opforge.build.nvcc import find_nvcc, gencode_flags, nvcc_to, parallel
from opforge.build.trt_headers import trt_include_dir
from opforge.core.fsutil import atomic_write_bytes, atomic_write_text

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
            try:
                atomic_write_bytes(obj, cached.read_bytes())  # another run may be replacing it: read it whole
                return obj
            except FileNotFoundError:
                pass
        nvcc_to(obj, [*args, str(src)], src.name)
        if cached is not None:
            atomic_write_bytes(cached, obj.read_bytes())  # unique temporary + rename: safe against other runs
        return obj

    return parallel(sources, one)


KERNELS_PER_TU = 16  # kernel files compiled together: nvcc's fixed cost per translation unit dominates small kernels


def unity_source(paths: list[Path], out: Path) -> Path:
    """One translation unit holding the text of `paths` in order. The text itself, not #include lines: the object
    cache keys on a translation unit's content, so an included file that changed must change the key."""
    atomic_write_text(out, "".join(f"// ---- {p.name}\n{p.read_text()}\n" for p in paths))
    return out


def kernel_units(kernel_files: list[Path], src_dir: Path) -> list[tuple[Path, list[Path]]]:
    """The kernel files in translation units of KERNELS_PER_TU (each plugin's kernels live in namespaces of its
    own, so they can share one): (unit, the files it holds)."""
    batches = [kernel_files[k : k + KERNELS_PER_TU] for k in range(0, len(kernel_files), KERNELS_PER_TU)]
    return [(unity_source(b, src_dir / f"opforge_kernels_{k}.cu"), b) for k, b in enumerate(batches)]


def build_library(
    files: dict[str, list[Path]], out: Path, arch: str = "sm_90", cache_dir: Path | None = None, unity: bool = False
) -> Path:
    """Compile the sources listed by opforge.emit.plugin_cpp.write_sources and link `out` atomically.
    unity=True compiles all host-only TUs (plugins and library) as one, which parses TensorRT's headers once, and
    the kernel files KERNELS_PER_TU to a TU: much faster for libraries of many plugins."""
    src_dir = files["library"][0].parent
    host = [*files["plugins"], *files["library"]]
    kernels = files["kernels"]
    if unity:
        host = [unity_source(host, src_dir / "opforge_unity.cpp")]
        kernels = [unit for unit, _ in kernel_units(kernels, src_dir)]
    objects = compile_objects(
        [*kernels, *host],
        src_dir / "obj",
        arch,
        [trt_include_dir(), src_dir],
        cache_dir,
    )
    exports = src_dir / "opforge_exports.map"
    atomic_write_text(exports, EXPORTS_MAP)
    link = ["-shared", *gencode_flags(arch), f"-Xlinker=--version-script={exports}"]
    return nvcc_to(out, [*link, *map(str, objects), "-ldl"], out.name)


HARNESS_SOURCE = Path(__file__).resolve().parent.parent / "harness" / "harness.cpp"


def build_harness(out: Path) -> Path:
    """The harness library (opforge.verify.harness loads it): host code only, against the same TensorRT headers."""
    return nvcc_to(
        out, ["-shared", *CXX_FLAGS, f"-I{trt_include_dir()}", str(HARNESS_SOURCE), "-ldl"], HARNESS_SOURCE.name
    )
