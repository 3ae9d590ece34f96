"""The one emit + build path: plugin specs -> generated sources -> plugin libraries (+ kernel fatbins, + the
verification harness). Used by `generate`, by tuning (a library of candidates) and by the conformance runner.

A library groups several plugins. With `isolate=True` the kernels are compiled first (KERNELS_PER_TU plugins to a
translation unit, as the library build will compile them, so its objects come from the cache), and a unit that
fails is compiled plugin by plugin: a plugin whose kernels nvcc rejects fails alone (its error is returned) and its
group is linked without it; with `isolate=False` the first failure is raised.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from opforge.build.nvcc import BuildError, compile_fatbin, parallel
from opforge.build.plugin_build import build_harness, build_library, compile_objects, kernel_units
from opforge.build.trt_headers import trt_include_dir
from opforge.core.cache import default_cache_dir
from opforge.core.fsutil import atomic_write_bytes
from opforge.emit.plugin_cpp import PluginSpec, write_sources

HARNESS_NAME = "libopforge_harness.so"
HARNESS_PATH = f"harness/{HARNESS_NAME}"  # inside an output folder or bundle


@dataclass
class LibraryGroup:
    """One library to build: its file name and the plugins it holds."""

    name: str
    plugins: list[PluginSpec]


@dataclass
class PackageResult:
    libraries: dict[str, list[str]] = field(default_factory=dict)  # library file name -> plugin names built into it
    failed: dict[str, str] = field(default_factory=dict)  # plugin name -> why it was not built
    harness: str | None = None  # the harness library, relative to the output folder

    def library_of(self, plugin: str) -> str | None:
        return next((lib for lib, names in self.libraries.items() if plugin in names), None)


def package(
    groups: list[LibraryGroup],
    out_dir: Path,
    arch: str = "sm_90",
    cache_dir: Path | None = None,
    isolate: bool = False,
    harness: bool = True,
    lib_subdir: str = "",
    keep_sources: bool = False,
) -> PackageResult:
    """Emit and compile every group into out_dir/<lib_subdir>/<group.name>; sources go to out_dir/src/<k>/ and are
    kept only with keep_sources (then one folder per group, or src/ itself for a single group)."""
    cache = (cache_dir or default_cache_dir()) / "objects"
    result = PackageResult()
    single = len(groups) == 1
    src_root = out_dir / "src"
    lib_dir = out_dir / lib_subdir if lib_subdir else out_dir
    lib_dir.mkdir(parents=True, exist_ok=True)
    for k, group in enumerate(groups):
        specs = list(group.plugins)
        if isolate:
            specs = _compile_kernels_isolating(specs, src_root / f"iso{k}", arch, cache, result.failed)
        if not specs:
            continue
        src_dir = src_root if single and keep_sources else src_root / (group.name.removesuffix(".so") or str(k))
        files = write_sources(specs, src_dir)
        try:
            build_library(files, lib_dir / group.name, arch, cache, unity=True)
        except BuildError as e:
            if not isolate:
                raise
            result.failed.update({s.name: f"library: {e}" for s in specs})
            continue
        finally:
            shutil.rmtree(src_dir / "obj", ignore_errors=True)
        result.libraries[f"{lib_subdir}/{group.name}" if lib_subdir else group.name] = [s.name for s in specs]
    if not keep_sources:
        shutil.rmtree(src_root, ignore_errors=True)
    else:
        for iso in src_root.glob("iso*"):
            shutil.rmtree(iso, ignore_errors=True)
    if harness:
        build_harness(out_dir / HARNESS_PATH)
        result.harness = HARNESS_PATH
    return result


def _compile_kernels_isolating(
    specs: list[PluginSpec], src_root: Path, arch: str, cache: Path, failed: dict[str, str]
) -> list[PluginSpec]:
    """Compile the plugins' kernels as the library build will (objects land in the cache); a unit nvcc rejects is
    compiled plugin by plugin to find the culprits. Returns the plugins that compiled, recording the others' errors
    in `failed`."""
    include = trt_include_dir()
    files = write_sources(specs, src_root)
    spec_of = dict(zip(files["kernels"], specs))

    def one(unit_members: tuple[Path, list[Path]]) -> None:
        unit, members = unit_members
        try:
            compile_objects([unit], src_root / "obj", arch, [include, src_root], cache)
        except BuildError:
            for f in members:
                try:
                    compile_objects([f], src_root / "obj", arch, [include, src_root], cache)
                except BuildError as e:
                    failed[spec_of[f].name] = str(e)

    parallel(kernel_units(files["kernels"], src_root), one)
    return [s for s in specs if s.name not in failed]


def build_fatbins(plans_dir: Path, keys: list[str], arch: str = "sm_90", cache_dir: Path | None = None) -> None:
    """plans_dir/<key>.cu -> plans_dir/<key>.fatbin for each key (the plan alone, run by `opforge check` through
    the CUDA driver API); fatbins are cached by the source's content hash."""
    cache = (cache_dir or default_cache_dir()) / "plans"
    cache.mkdir(parents=True, exist_ok=True)

    def one(key: str) -> None:
        source = plans_dir / f"{key}.cu"
        cached = cache / f"{key}-{hashlib.sha256(source.read_bytes()).hexdigest()[:16]}.fatbin"
        if not cached.is_file():
            compile_fatbin(source, cached, arch)
        atomic_write_bytes(plans_dir / f"{key}.fatbin", cached.read_bytes())

    parallel(sorted(set(keys)), one)
