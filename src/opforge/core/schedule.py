"""A schedule configuration: how a plan's kernels are scheduled when tuned (None: TVM DLight's defaults).
Plain data: no TVM needed to read records. The space of configurations tried lives in opforge.tune.space.

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


def label(config: ScheduleConfig | None) -> str:
    """A configuration's label; DLight's defaults are 'dlight-default'."""
    return "dlight-default" if config is None else config.label
