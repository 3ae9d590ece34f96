"""Whether this machine can run the GPU commands (check, verify, tune --measure), with one-line reasons, and the
GPU's name: both asked of the CUDA driver in a forked child process, so that the caller's process does not start
CUDA. Verification runs its work in forked workers (opforge.runtime.isolated), which cannot use CUDA once their
parent has initialised it."""

from __future__ import annotations

from opforge.core.errors import OpforgeError

GPU_EXTRA = "pip install 'opforge[gpu]'"
_PROBE_TIMEOUT_S = 60.0


def require_gpu(command: str) -> None:
    """An OpforgeError (one line) unless cuda-python is importable and the CUDA driver sees a GPU."""
    try:
        from cuda.bindings import driver  # noqa: F401  (imported to tell a missing package from a missing GPU)
    except ImportError:
        raise OpforgeError(f"{command} needs cuda-python on a machine with a GPU: {GPU_EXTRA}") from None
    problem, _name, _count = _probe()
    if problem:
        raise OpforgeError(f"{command}: {problem}")


def gpu_name() -> str:
    """The name of GPU 0 (the CUDA driver's), without starting CUDA in this process; an OpforgeError naming the
    problem where there is none."""
    problem, name, _count = _probe()
    if problem:
        raise OpforgeError(f"GPU name: {problem}")
    return name


def gpu_count() -> int:
    """How many GPUs the CUDA driver sees (0 where it sees none, or is missing), without starting CUDA here."""
    return _probe()[2]


def _probe() -> tuple[str, str, int]:
    """(problem, GPU 0's name, GPU count) from a forked worker: problem is "" where the driver sees a GPU."""
    from opforge.runtime.isolated import run_isolated

    (answer,) = run_isolated(
        [None],
        lambda: None,
        lambda _state, _item: _ask_driver(),
        lambda _item, why: (f"no GPU ({why})", "", 0),
        timeout_s=_PROBE_TIMEOUT_S,
    )
    return answer


def _ask_driver() -> tuple[str, str, int]:
    from cuda.bindings import driver as cu

    err = cu.cuInit(0)[0]
    if err != cu.CUresult.CUDA_SUCCESS:
        return f"no GPU (the CUDA driver says {err.name})", "", 0
    err, count = cu.cuDeviceGetCount()
    if err != cu.CUresult.CUDA_SUCCESS or count == 0:
        return "no GPU", "", 0
    err, device = cu.cuDeviceGet(0)
    err, raw = cu.cuDeviceGetName(256, device)
    name = raw.split(b"\0")[0].decode() if err == cu.CUresult.CUDA_SUCCESS else "unknown GPU"
    return "", name, int(count)
