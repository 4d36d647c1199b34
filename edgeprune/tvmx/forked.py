"""Run a function over items in a forked child process, each item under a time limit.

Why: TVM's compiler can spin without end on one candidate schedule (seen in a benchmark: 14 min on an NCHW
convolution of mobilenetv2, inside libtvm_compiler.so, until it was stopped by hand). A build inside the tuning
process cannot be interrupted, and a thread left spinning would hold a core for the rest of the run. A forked
child inherits the items as they are (TVM modules need no pickling), and it can be killed: the candidate that
overran becomes a failed candidate, and the rest of its batch builds in a fresh child.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """What one item gave: its value, or why it has none."""

    value: Any = None
    error: str | None = None
    timed_out: bool = False  # the item overran its limit (a hang to report), as opposed to failing


def map_forked(fn: Callable[[Any], Any], items: Sequence[Any], timeout_s: float) -> list[Outcome]:
    """`fn` over `items` in order, in forked children: an exception, a child that dies, or an item that runs
    longer than `timeout_s` gives an `Outcome` with its error, and the items after it still run. Values must
    be picklable (they come back over a pipe); the items need not be (the child inherits them)."""
    context = multiprocessing.get_context("fork")
    outcomes: list[Outcome] = []
    while len(outcomes) < len(items):
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_serve, args=(fn, items[len(outcomes) :], send), daemon=True)
        child.start()
        send.close()
        try:
            while len(outcomes) < len(items):
                if not receive.poll(timeout_s):
                    outcomes.append(Outcome(error=f"timed out after {timeout_s:g} s", timed_out=True))
                    break
                try:
                    outcomes.append(receive.recv())
                except EOFError:
                    child.join(timeout=5)
                    outcomes.append(Outcome(error=f"the worker process died (exit code {child.exitcode})"))
                    break
        finally:
            child.kill()
            child.join()
            receive.close()
    return outcomes


def _serve(fn: Callable[[Any], Any], items: Sequence[Any], send: Connection) -> None:
    for item in items:
        try:
            outcome = Outcome(value=fn(item))
        except Exception as exc:  # noqa: BLE001 - the caller gets every failure as an outcome
            outcome = Outcome(error=f"{type(exc).__name__}: {exc}")
        send.send(outcome)
    send.close()
