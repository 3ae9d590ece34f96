"""The GPU a plan is compiled for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CudaTarget:
    arch: str = "sm_90"
    max_threads_per_block: int = 1024
    max_shared_memory_per_block: int = 49152
    thread_warp_size: int = 32

    def tvm_config(self) -> dict:
        # TVM 0.27 takes targets in dict form only.
        return {
            "kind": "cuda",
            "arch": self.arch,
            "max_threads_per_block": self.max_threads_per_block,
            "max_shared_memory_per_block": self.max_shared_memory_per_block,
            "thread_warp_size": self.thread_warp_size,
        }
