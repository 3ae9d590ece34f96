"""The one place nvcc is found and invoked."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from opforge.core.errors import OpforgeError


class BuildError(OpforgeError):
    pass


def find_nvcc() -> str:
    override = os.environ.get("OPFORGE_NVCC")
    if override:
        if Path(override).is_file() and os.access(override, os.X_OK):
            return override
        raise BuildError(f"nvcc not found at OPFORGE_NVCC={override}")
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / "bin" / "nvcc")
    found = shutil.which("nvcc")
    if found:
        candidates.append(Path(found))
    candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    raise BuildError("nvcc not found: install the CUDA toolkit (12.4 or newer) or set CUDA_HOME")


def gencode_flags(arch: str = "sm_90") -> list[str]:
    """SASS for the target GPU plus PTX of the same architecture, so newer GPUs can JIT it."""
    sm = arch.removeprefix("sm_")
    return [f"-gencode=arch=compute_{sm},code=sm_{sm}", f"-gencode=arch=compute_{sm},code=compute_{sm}"]


def run_nvcc(args: list[str], what: str, cwd: Path | None = None) -> None:
    cmd = [find_nvcc(), *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()] or proc.stderr.splitlines()
        first = errors[0].strip() if errors else f"exit code {proc.returncode}"
        raise BuildError(f"nvcc failed on {what}: {first}")


def unique_tmp(out: Path) -> Path:
    """A temporary name next to `out`, unique to this process and call (concurrent runs share the cache)."""
    return out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def nvcc_to(out: Path, args: list[str], what: str) -> Path:
    """Run nvcc writing `-o` to a unique temporary next to `out`, then rename it into place atomically (readers
    and concurrent writers see the whole file or none)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(out)
    try:
        run_nvcc([*args, "-o", str(tmp)], what)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def compile_fatbin(source: Path, out: Path, arch: str = "sm_90") -> Path:
    """A kernel-only CUDA source -> fatbin (SASS + PTX), loadable with cuModuleLoadData."""
    return nvcc_to(out, ["-fatbin", "-O3", "-std=c++17", *gencode_flags(arch), str(source)], str(source))


def parallel(jobs: list, fn, workers: int | None = None) -> list:
    """Run fn over jobs on a thread pool (nvcc processes run in parallel); the first failure is raised."""
    workers = workers or max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, jobs))
