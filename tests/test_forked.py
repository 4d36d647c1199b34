"""map_forked: the time limit that keeps one candidate build spinning in TVM's compiler from stalling tuning."""

from __future__ import annotations

import os
import time

from edgeprune.tvmx.forked import Outcome, map_forked


def _work(item: str) -> str:
    if item == "hang":
        time.sleep(60)
    if item == "raise":
        raise ValueError("bad candidate")
    if item == "die":
        os._exit(3)
    return item.upper()


def test_values_come_back_in_order() -> None:
    assert map_forked(_work, ["a", "b", "c"], timeout_s=30) == [Outcome("A"), Outcome("B"), Outcome("C")]


def test_an_item_over_its_time_fails_and_the_rest_still_run() -> None:
    started = time.perf_counter()
    outcomes = map_forked(_work, ["a", "hang", "b"], timeout_s=1.0)
    assert time.perf_counter() - started < 20
    assert outcomes[0] == Outcome("A") and outcomes[2] == Outcome("B")
    assert outcomes[1].value is None and outcomes[1].error == "timed out after 1 s" and outcomes[1].timed_out


def test_an_exception_or_a_dead_worker_is_that_item_s_error() -> None:
    outcomes = map_forked(_work, ["raise", "die", "c"], timeout_s=30)
    assert outcomes[0].error == "ValueError: bad candidate"
    assert outcomes[1].error == "the worker process died (exit code 3)"
    assert not outcomes[0].timed_out and not outcomes[1].timed_out
    assert outcomes[2] == Outcome("C")


def test_items_need_not_pickle() -> None:
    unpicklable = [lambda: "x", lambda: "y"]
    assert [o.value for o in map_forked(lambda f: f(), unpicklable, timeout_s=30)] == ["x", "y"]
