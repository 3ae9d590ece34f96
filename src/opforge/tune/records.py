"""Tuning records: one JSON line per measured candidate, appended and fsynced one by one.

A run killed at any point (kill -9 included) loses at most the line being written; a torn last line is skipped
when read and closed off before the next append. A later run reads the records, measures only what is missing and
builds the fastest correct candidate.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opforge.core.kernel_plan import LOWERING_REVISION
from opforge.core.schedule import ScheduleConfig, label

RECORDS_FILE = "tuning-records.jsonl"


@dataclass
class Record:
    workload: str  # subgraph key @ target arch
    label: str  # opforge.core.schedule.label(config)
    config: dict | None  # None: DLight's defaults
    ok: bool  # correct against the ONNX reference under every poison tried
    us: float | None  # median µs per call
    poisons: int = 0  # output poisons it was checked under (2: a full check; only those may win)
    device: str = ""
    dims: dict = field(default_factory=dict)  # the dimension values it was measured at
    error: str = ""
    when: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))

    @property
    def schedule(self) -> ScheduleConfig | None:
        return None if self.config is None else ScheduleConfig.from_dict(self.config)


def workload_key(subgraph_key: str, arch: str) -> str:
    """What a measurement is of: the subgraph, the GPU architecture and the lowering's revision (a record of an
    older lowering measured other kernels under the same configuration label, so it is not reused)."""
    return f"{subgraph_key}@{arch}/r{LOWERING_REVISION}"


class TuningRecords:
    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def default(cls) -> TuningRecords:
        from opforge.core.cache import default_cache_dir

        return cls(default_cache_dir() / RECORDS_FILE)

    def load(self, workload: str | None = None) -> list[Record]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                r = Record(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue  # a line torn by a killed run
            if workload is None or r.workload == workload:
                out.append(r)
        return out

    def append(self, record: Record) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            torn = os.fstat(fd).st_size > 0 and not self._ends_with_newline()
            line = ("\n" if torn else "") + json.dumps(asdict(record)) + "\n"
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def measured(self, workload: str) -> set[str]:
        return {r.label for r in self.load(workload)}

    def best(self, workload: str) -> Record | None:
        ok = [r for r in self.load(workload) if r.ok and r.us is not None and r.poisons >= 2]
        return min(ok, key=lambda r: r.us) if ok else None

    def config_for(self, workload: str) -> ScheduleConfig | None:
        """The fastest correct configuration recorded (None: no records, or DLight's defaults won)."""
        b = self.best(workload)
        return b.schedule if b else None


__all__ = ["RECORDS_FILE", "Record", "TuningRecords", "label", "workload_key"]
