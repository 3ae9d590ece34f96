"""Lowering in a worker process, for inputs nobody vetted (generated fuzz cases, suites): TVM can abort or crash
the process on some graphs (a segmentation fault in its ONNX frontend on a symbolic NonMaxSuppression); in the
worker that ends one case as a LoweringError instead of the whole run.

The worker lowers the subgraph through `plan_subgraphs`, which stores the plan in opforge's plan cache; the calling
process then reads the same plan from the cache. One worker at a time (this machine class has 2 cores, and nvcc
runs beside it); a crashed worker is replaced on the next call.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from opforge.core.errors import LoweringError, OpforgeError
from opforge.extract.subgraph import NodeSubgraph


def _lower_in_worker(sub: NodeSubgraph, out_dir: Path) -> str | None:
    """Worker side: lower into the plan cache; the error's text (one line) or None."""
    from opforge.plan.planner import plan_subgraphs

    try:
        plan_subgraphs([sub], out_dir)
    except OpforgeError as e:
        return f"opforge:{e}"
    except Exception as e:  # any TVM failure is this case's lowering failure
        return f"{type(e).__name__}: {str(e)[:280]}"
    return None


class Worker:
    """One worker process (spawned, so no TVM thread state is inherited) that runs calls one at a time; a call that
    kills it raises LoweringError, and the next call starts a new worker."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def call(self, what: str, fn, *args):
        """fn(*args) in the worker (fn and args picklable); `what` names the case in the crash message."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return self._pool.submit(fn, *args).result()
        except BrokenProcessPool:
            self.close()
            raise LoweringError(f"{what}: TVM crashed the worker process (it is restarted)") from None


class IsolatedPlanner(Worker):
    """`plan(sub, out_dir)`: plan_subgraphs([sub], out_dir)[0], with the lowering done in the worker process."""

    def plan(self, sub: NodeSubgraph, out_dir: Path):
        """The subgraph's PlannedNode; LoweringError (or the OpforgeError the lowering raised) when it fails or the
        worker dies."""
        from opforge.plan.planner import plan_subgraphs

        err = self.call(sub.node_name, _lower_in_worker, sub, out_dir)
        if err is not None:
            raise LoweringError(err.removeprefix("opforge:"))
        return plan_subgraphs([sub], out_dir)[0]
