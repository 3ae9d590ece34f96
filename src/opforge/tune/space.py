"""The tuning space: schedule configurations for the spatial (elementwise, gather, scatter, resize, ...) kernels
of a plan, and the thread count every other DLight rule works with."""

from __future__ import annotations

from opforge.core.schedule import ScheduleConfig

# None stands for TVM's DLight defaults (what an untuned plan uses).
DEFAULT: ScheduleConfig | None = None


def candidates() -> list[ScheduleConfig | None]:
    """The space, DLight's defaults first: 4 block sizes x 4 elements per thread x 2 layouts (the contiguous
    layout with 1 element is the strided one) = 28 configurations + the default."""
    out: list[ScheduleConfig | None] = [DEFAULT]
    for threads in (128, 256, 512, 1024):
        for per_thread in (1, 2, 4, 8):
            for layout in ("strided", "contiguous"):
                if layout == "contiguous" and per_thread == 1:
                    continue
                out.append(ScheduleConfig(threads, per_thread, layout))
    return out


def small_candidates() -> list[ScheduleConfig | None]:
    """A 10-point subset for quick tuning (benchmarks of many ops): DLight's defaults; every block size with one
    element per thread (what reaches the row reductions); 256 and 1024 threads with 4 elements per thread in both
    layouts; 128 threads with 4 (for a matmul, opforge.lower.matmul_rule: 8x4 micro tiles in K steps of 16)."""
    out: list[ScheduleConfig | None] = [DEFAULT]
    for threads in (128, 256, 512, 1024):
        out += [ScheduleConfig(threads, 1, "strided")]
        if threads == 128:
            out += [ScheduleConfig(threads, 4, "contiguous")]
        if threads in (256, 1024):
            out += [ScheduleConfig(threads, 4, layout) for layout in ("strided", "contiguous")]
    return out
