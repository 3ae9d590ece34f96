"""Whether this machine can run the GPU commands (check, verify, tune --measure), with one-line reasons."""

from __future__ import annotations

from opforge.core.errors import OpforgeError

GPU_EXTRA = "pip install 'opforge[gpu]'"


def require_gpu(command: str) -> None:
    """An OpforgeError (one line) unless cuda-python is importable and the CUDA driver sees a GPU."""
    try:
        from cuda.bindings import driver as cu
    except ImportError:
        raise OpforgeError(f"{command} needs cuda-python on a machine with a GPU: {GPU_EXTRA}") from None
    try:
        err = cu.cuInit(0)[0]
        if err != cu.CUresult.CUDA_SUCCESS:
            raise OpforgeError(f"{command}: no GPU (the CUDA driver says {err.name})")
        err, count = cu.cuDeviceGetCount()
    except OpforgeError:
        raise
    except Exception as e:  # a driver library missing or broken
        raise OpforgeError(f"{command}: no GPU ({type(e).__name__}: {e})") from None
    if err != cu.CUresult.CUDA_SUCCESS or count == 0:
        raise OpforgeError(f"{command}: no GPU")
