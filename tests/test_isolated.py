"""opforge.runtime.isolated: an item that faults, crashes or hangs fails alone; the items after it run in a fresh
worker (the CPU stands in for a dead CUDA context: a worker whose item raised refuses all later work)."""

from __future__ import annotations

import faulthandler
import os
import signal
import time

import pytest

from opforge.runtime.isolated import run_isolated

_POISONED = {"yes": False}  # a worker's "context": dead once one of its items raised


def _setup() -> int:
    return os.getpid()


def _work(pid: int, item: tuple[int, str]) -> dict:
    k, action = item
    if _POISONED["yes"]:  # what a sticky CUDA error does to every later call of the process
        raise RuntimeError("context is dead")
    if action == "raise":
        _POISONED["yes"] = True
        raise ValueError(f"item {k} faulted")
    if action == "segv":
        faulthandler.disable()  # pytest's handler would print the worker's stack
        os.kill(os.getpid(), signal.SIGSEGV)
    if action == "hang":
        time.sleep(60)
    return {"item": k, "ok": True, "pid": pid}


def _fault(item: tuple[int, str], reason: str) -> dict:
    return {"item": item[0], "ok": False, "reason": reason}


def test_faults_crashes_and_hangs_fail_alone_and_later_items_run():
    actions = ["", "", "raise", "", "segv", "", "hang", "", "raise", "raise", ""]
    items = list(enumerate(actions))
    seen = []
    results = run_isolated(items, _setup, _work, _fault, timeout_s=2.0, progress=lambda item, r: seen.append((item, r)))
    assert [r["item"] for r in results] == list(range(len(items)))
    assert seen == list(zip(items, results))
    for r, action in zip(results, actions):
        assert r["ok"] == (action == ""), r
    by_item = {r["item"]: r for r in results}
    assert by_item[2]["reason"] == "ValueError: item 2 faulted"
    assert "SIGSEGV" in by_item[4]["reason"]
    assert "timed out after 2 s" in by_item[6]["reason"]
    # A fresh worker after each failure: five workers for the six runs of good items, none of them this process.
    pids = [r["pid"] for r in results if r["ok"]]
    assert len(set(pids)) == 5 and os.getpid() not in pids
    assert pids[0] == pids[1] and pids[-1] != pids[-2]


def test_a_failing_setup_fails_every_item_once():
    def setup():
        raise OSError("no GPU")

    results = run_isolated([(0, ""), (1, "")], setup, _work, _fault, timeout_s=5.0)
    assert [r["reason"] for r in results] == ["worker setup failed: OSError: no GPU"] * 2


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_item_lists(n):
    items = [(k, "") for k in range(n)]
    assert [r["item"] for r in run_isolated(items, _setup, _work, _fault)] == list(range(n))


def test_in_process_runs_every_item_here_and_a_fault_reaches_the_items_after_it(monkeypatch):
    monkeypatch.setitem(_POISONED, "yes", False)
    items = list(enumerate(["", "raise", ""]))
    results = run_isolated(items, _setup, _work, _fault, in_process=True)
    assert results[0] == {"item": 0, "ok": True, "pid": os.getpid()}
    assert results[1]["reason"] == "ValueError: item 1 faulted"
    assert results[2]["reason"] == "RuntimeError: context is dead"  # what the workers spare the later items
