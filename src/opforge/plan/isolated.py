"""Lowering in a worker process, for inputs nobody vetted (generated fuzz cases, suites): TVM can abort or crash
the process on some graphs (a segmentation fault in its ONNX frontend on a symbolic NonMaxSuppression); in the
worker that ends one case as a LoweringError instead of the whole run.

The worker lowers the subgraph through `plan_subgraphs`, which stores the plan in opforge's plan cache; the calling
process then reads the same plan from the cache. One worker at a time (this machine class has 2 cores, and nvcc
runs beside it); a crashed worker, or one stopped after Worker.timeout_s on one case, is replaced on the next call.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from opforge.core.errors import LoweringError, OpforgeError
from opforge.core.schedule import ScheduleConfig
from opforge.extract.subgraph import NodeSubgraph


def _lower_in_worker(sub: NodeSubgraph, out_dir: Path, config: ScheduleConfig | None = None) -> str | None:
    """Worker side: lower into the plan cache (under a tuned `config`, None: DLight's defaults); the error's text
    (one line) or None."""
    from opforge.plan.planner import plan_subgraphs

    try:
        plan_subgraphs([sub], out_dir, config_for=lambda _s: config)
    except OpforgeError as e:
        return f"opforge:{e}"
    except Exception as e:  # any TVM failure is this case's lowering failure
        return f"{type(e).__name__}: {str(e)[:280]}"
    return None


def _serve(conn) -> None:
    """The worker's loop: (fn, args) in, (True, result) or (False, error text) out, until the pipe closes."""
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:
            return
        try:
            conn.send((True, fn(*args)))
        except Exception as e:  # any failure of the call is its caller's to report
            conn.send((False, f"{type(e).__name__}: {str(e)[:300]}"))


class Worker:
    """One worker process (spawned, so no TVM thread state is inherited) that runs calls one at a time. A call that
    kills it, or outlives `timeout_s`, raises LoweringError; the next call starts a new worker."""

    def __init__(self, timeout_s: float = 180.0) -> None:
        self.timeout_s = timeout_s
        self._proc = None
        self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is not None:
            self._conn.close()
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
            self._proc = self._conn = None

    def _kill(self) -> None:
        self._proc.kill()
        self._proc.join()
        self._conn.close()
        self._proc = self._conn = None

    def call(self, what: str, fn, *args):
        """fn(*args) in the worker (fn module-level, fn and args picklable); `what` names the case in errors."""
        if self._proc is None or not self._proc.is_alive():
            ctx = multiprocessing.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(target=_serve, args=(child,), daemon=True)
            self._proc.start()
            child.close()
        self._conn.send((fn, args))
        if not self._conn.poll(self.timeout_s):
            self._kill()
            raise LoweringError(f"{what}: lowering took over {self.timeout_s:.0f} s (stopped)")
        try:
            ok, value = self._conn.recv()
        except (EOFError, ConnectionResetError):
            self._kill()
            raise LoweringError(f"{what}: TVM crashed the worker process (it is restarted)") from None
        if not ok:
            raise LoweringError(f"{what}: {value}")
        return value


class IsolatedPlanner(Worker):
    """`plan(sub, out_dir)`: plan_subgraphs([sub], out_dir)[0], with the lowering done in the worker process."""

    def plan(self, sub: NodeSubgraph, out_dir: Path, config: ScheduleConfig | None = None):
        """The subgraph's PlannedNode under a tuned `config` (None: DLight's defaults); LoweringError (or the
        OpforgeError the lowering raised) when it fails or the worker dies."""
        from opforge.plan.planner import plan_subgraphs

        err = self.call(sub.node_name, _lower_in_worker, sub, out_dir, config)
        if err is not None:
            raise LoweringError(err.removeprefix("opforge:"))
        return plan_subgraphs([sub], out_dir, config_for=lambda _s: config)[0]
