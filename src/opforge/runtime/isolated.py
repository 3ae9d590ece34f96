"""Run GPU work items in a worker process, so that one item's fault does not end the others.

A kernel that faults (an illegal or misaligned address) leaves its CUDA context unusable: every later call in the
process fails with the same error. A plugin that crashes the process (a segfault in its host code) or hangs (a
kernel that never ends) takes every later item with it too. So the items run in a forked worker: an item that
raises ends its worker (its CUDA context may be dead), one whose worker dies or outlives `timeout_s` is killed, and
in each case the item gets the caller's failure result and a fresh worker goes on from the next item.

The parent must not have started CUDA (a forked child cannot use its parent's context): callers do their CUDA
work (loading the harness, reading the device's name) in `setup`, which each worker runs once. Only the results
cross back (pickled), so they must be plain data.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

DEFAULT_TIMEOUT_S = 300.0


def run_isolated(
    items: Sequence[Item],
    setup: Callable[[], Any],
    work: Callable[[Any, Item], Result],
    on_fault: Callable[[Item, str], Result],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[Item, Result], None] | None = None,
    in_process: bool = False,
) -> list[Result]:
    """work(setup(), item) for every item, in order, in worker processes; an item whose work raises, crashes its
    worker or runs past `timeout_s` seconds gets on_fault(item, one-line reason) instead, and the next item a fresh
    worker. `progress(item, result)` sees each result as it comes. A worker whose `setup` fails fails every
    remaining item with that reason (setup is not retried: it would fail again). `in_process`: run them here
    instead, one after another (for a caller whose process has started CUDA itself): an item that raises still
    gets on_fault, but nothing protects the items after it."""
    if in_process:
        return _run_here(items, setup, work, on_fault, progress)
    results: list[Result] = []
    ctx = multiprocessing.get_context("fork")
    start = 0
    while start < len(items):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(setup, work, items, start, child), daemon=True)
        proc.start()
        child.close()
        reason = None
        deadline = time.monotonic() + timeout_s  # for setup, then for each item from its start
        while reason is None:
            if not parent.poll(max(0.0, deadline - time.monotonic())):
                reason = f"timed out after {timeout_s:g} s (its worker was killed)"
                proc.kill()
                break
            try:
                kind, *rest = parent.recv()
            except EOFError:  # the worker ended: all done, or it died
                break
            if kind == "begin":
                deadline = time.monotonic() + timeout_s
            elif kind == "done":
                results.append(rest[1])
                if progress:
                    progress(items[len(results) - 1], rest[1])
            elif kind == "raised":
                reason = rest[1]
            else:  # setup failed: every item left fails with it
                reason = f"worker setup failed: {rest[0]}"
                start = len(items)
        _stop(proc)
        parent.close()
        if len(results) == len(items):
            break
        # The worker stopped on the item after the last result.
        reason = reason or f"its worker process died ({_exit_text(proc.exitcode)})"
        for item in items[len(results) : max(start, len(results) + 1)]:
            results.append(on_fault(item, reason))
            if progress:
                progress(item, results[-1])
        start = len(results)
    return results


def _run_here(items, setup, work, on_fault, progress) -> list:
    try:
        state = setup()
    except Exception as e:
        state, broken = None, f"setup failed: {one_line(e)}"
    else:
        broken = ""
    results = []
    for item in items:
        if broken:
            result = on_fault(item, broken)
        else:
            try:
                result = work(state, item)
            except Exception as e:
                result = on_fault(item, one_line(e))
        results.append(result)
        if progress:
            progress(item, result)
    return results


def _stop(proc) -> None:
    """Wait briefly for a worker that is ending, kill one that is not."""
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _worker(setup, work, items, start: int, conn) -> None:
    """A worker's loop: set up once, then items from `start` until one raises (then it exits: its CUDA context
    may be dead) or all are done."""
    try:
        state = setup()
    except Exception as e:
        conn.send(("setup-failed", one_line(e)))
        conn.close()
        return
    for i in range(start, len(items)):
        conn.send(("begin", i))
        try:
            result = work(state, items[i])
        except Exception as e:
            conn.send(("raised", i, one_line(e)))
            conn.close()
            return
        conn.send(("done", i, result))
    conn.close()


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception as one line: its type and the start of its message."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:limit]


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
