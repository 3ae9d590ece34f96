"""The tuning space: schedule configurations for the spatial (elementwise, gather, scatter, resize, ...) kernels
of a plan, and the thread count every other DLight rule works with. Plain data: no TVM needed to read records.

A configuration does not depend on shapes, so one tuned at the opt shape of a dynamic profile applies to the
symbolic plan unchanged: every shape still gets a correct kernel, the opt shape the fastest one measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Layout = Literal["strided", "contiguous"]


@dataclass(frozen=True)
class ScheduleConfig:
    threads: int  # threads per block, for every kernel of the plan
    per_thread: int  # elements each thread of a spatial kernel computes
    layout: Layout  # strided: thread t takes t, t+threads, ... (coalesced); contiguous: a run, vectorised

    @property
    def label(self) -> str:
        return f"t{self.threads}x{self.per_thread}{self.layout[0]}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ScheduleConfig:
        return cls(int(d["threads"]), int(d["per_thread"]), d["layout"])


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


def label(config: ScheduleConfig | None) -> str:
    return "dlight-default" if config is None else config.label
