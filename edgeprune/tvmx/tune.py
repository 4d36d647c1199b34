"""MetaSchedule tuning measured on the device through RPC, with one persistent tuning database per device.

Records are keyed by workload shape, so the database that tunes one network serves its pruned variants, the
latency table's single-layer modules and later compiles: every stage asks `tuning_db_dir(device)`.
Builds run in a forked child of this process under a time limit (the default LocalBuilder re-imports TVM in
fresh workers every batch and times out on small machines); candidates run on the device's RPC servers through
the tracker.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune import logs
from edgeprune.devices import rpc
from edgeprune.devices.base import Device
from edgeprune.devices.tuning import TuningConfig
from edgeprune.errors import EdgepruneError
from edgeprune.tvmx.measure import builder, exclusive, extract_tasks, runner, tuning_db_dir
from edgeprune.tvmx.transplant import transplant_from_families

TRIALS_PER_ITER = 16


@dataclass
class TuneReport:
    tasks: int
    tasks_reused: int
    trials: int
    seconds: float
    failed: int = 0  # candidates that did not build or run; their time is not a measurement
    tasks_transplanted: int = 0  # new shapes given their family's tuned schedule instead of being tuned
    out_of_time: bool = False  # the time budget stopped tuning before its trials were spent


@dataclass
class _Tally:
    """What the measured batches reported so far: trials, failures, each task's best kernel time."""

    weights: list[float]
    done: int = 0
    failed: int = 0
    first_error: str | None = None
    out_of_time: bool = False
    best_ms: dict[int, float] = field(default_factory=dict)
    per_task: dict[int, int] = field(default_factory=dict)  # trials measured, by task

    @property
    def network_ms(self) -> float | None:
        """Sum of each task's best time times its use count: an estimate of the tuned network's kernels."""
        return sum(ms * self.weights[i] for i, ms in self.best_ms.items()) if self.best_ms else None


class _ToTvmLog(io.TextIOBase):
    """A text stream whose writes become records of edgeprune's TVM logger (logs.py), one per line or block."""

    def __init__(self) -> None:
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        # a logging handler writes a record and its newline at once: a table stays one record, not 12
        self.pending += text
        if self.pending.endswith("\n"):
            block, self.pending = self.pending.rstrip("\n"), ""
            if block.strip():
                logs.tvm_logger().info(block)
        return len(text)


@contextlib.contextmanager
def _quiet_tvm_logs() -> Iterator[None]:
    """Keep MetaSchedule off our terminal and in edgeprune's TVM log (a run's logs/tvm.log; --verbose shows it).

    What printed its table ("Total trials", task IDs) on the terminal: MetaSchedule's Python logging. Every
    `extracted_tasks_to_tune_contexts` (one per task here) rebuilds its config with `logging.config.dictConfig`,
    which sets its top logger to DEBUG and gives it a console handler on `sys.stdout` (as resolved then) at the
    level that logger had just before (edgeprune set WARNING, which held for the first task only; from the
    second on, DEBUG). The C++ task
    scheduler logs through the child `...task_scheduler.task_scheduler`, whose records propagate to that
    handler; a filter on the top logger does not see propagated records. So stdout is this stream while
    tuning: the handler writes every record into edgeprune's TVM log, whatever its level, and keeps writing
    there after the block (a later apply-database warning included). Its full logs also stay in the
    database's logs/.
    """
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    # MetaSchedule rebuilds its logging config from the logger's handlers by name on every tuning run and
    # fails on an unnamed one (pytest's capture handlers, or an embedding application's): detach those meanwhile
    unnamed = [h for h in logger.handlers if h.get_name() is None]
    for handler in unnamed:
        logger.removeHandler(handler)
    try:
        with contextlib.redirect_stdout(_ToTvmLog()):
            yield
    finally:
        for handler in unnamed:
            logger.addHandler(handler)


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """numpy's global generator at `seed` while MetaSchedule tunes, given back as it was after. Until it holds
    100 measurements, the XGBoost cost model scores candidates with `np.random.uniform` (TVM's xgb_model.py), so
    tuning at one seed drew other schedules in every run: a table tuned at a few trials was a random draw."""
    import numpy as np

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _tally_callback(tally: _Tally, ids: list[int], on_batch: Callable[[_Tally], None]) -> Any:
    """A measure callback that counts each batch's trials and failures and keeps each task's best time
    (`ids[task_id]`: the task's index in the whole run, as a round tunes only some of them)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Tally(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler: Any, task_id: int, candidates: Any, builds: Any, runs: Any) -> None:
            task_id = ids[task_id]
            for built, run in zip(builds, runs, strict=True):
                tally.done += 1
                tally.per_task[task_id] = tally.per_task.get(task_id, 0) + 1
                error = built.error_msg or run.error_msg
                if error is not None or not run.run_secs:
                    tally.failed += 1
                    tally.first_error = tally.first_error or str(error)
                    continue
                ms_value = sum(float(s) for s in run.run_secs) / len(run.run_secs) * 1e3
                tally.best_ms[task_id] = min(tally.best_ms.get(task_id, ms_value), ms_value)
            on_batch(tally)

    return Tally()


def _require_servers(device: Device) -> None:
    """Fail in seconds when nobody serves the device: MetaSchedule's runner would retry for many minutes
    and record every candidate as failed."""
    counts = rpc.server_counts(rpc.tracker_summary(device.tracker_host, device.tracker_port))
    if device.key not in counts:
        raise EdgepruneError(
            f"no RPC server under key '{device.key}' at tracker {device.tracker} to measure tuning candidates on",
            hint=f"start the device's RPC server ({device.start_hint()}), or pass --trials 0 to compile untuned",
        )


def _tuned_workloads(db_dir: Path, tasks: list[Any]) -> set[int]:
    """Indices of tasks the database holds a measured record for (these are reused, not tuned again).

    A workload whose candidates all failed (device lost mid-run) is in the database too, without a usable
    record: it is tuned again rather than silently shipped untuned.
    """
    from tvm.s_tir import meta_schedule as ms

    if not (db_dir / "database_tuning_record.json").exists():
        return set()
    db = ms.database.JSONDatabase(work_dir=str(db_dir))
    return {
        i
        for i, t in enumerate(tasks)
        if db.has_workload(t.dispatched[0]) and db.get_top_k(db.commit_workload(t.dispatched[0]), 1)
    }


def _search_strategy(config: TuningConfig) -> Any:
    """A fresh search strategy for one task (an evolutionary search keeps per-task state). Its population is
    at most 8 candidates per trial the task will measure: searching 128 to measure 2 (a small compile budget,
    the tests) costs seconds per task and round for nothing."""
    from tvm.s_tir import meta_schedule as ms

    if config.strategy == "evolutionary":
        population = max(2, min(config.population, 8 * config.trials))
        return ms.search_strategy.EvolutionarySearch(
            population_size=population, genetic_num_iters=2, init_min_unmeasured=max(1, population // 4)
        )
    return config.strategy


def run_tuning(
    todo: list[Any],
    device: Device,
    config: TuningConfig,
    db_dir: Path,
    seed: int,
    on_progress: Callable[[int, int, float | None], None] | None,
) -> _Tally:
    """MetaSchedule over the tasks in `todo` (extracted tasks), whatever the database already holds for them
    (`tune` picks the tasks; a benchmark deepens a database with it): forked builds, candidates run on
    the device over RPC. The caller holds the database's lock.

    With `config.minutes`, it tunes in rounds of one batch per task and starts no round past the deadline,
    the first excepted (setting up the search can take a minute on a small machine: a budget spent before
    any measurement would ship nothing tuned). MetaSchedule has no deadline of its own, and stopping it
    mid-round would strand measurements in flight; every round's records are in the database, and the cost
    model carries over between rounds.
    """
    from tvm.s_tir import meta_schedule as ms

    total = min(config.trials * len(todo), config.max_trials or config.trials * len(todo))
    per_round = min(TRIALS_PER_ITER, config.trials) if config.minutes is not None else config.trials
    deadline = None if config.minutes is None else time.perf_counter() + config.minutes * 60
    device.prepare_tuning()
    with _quiet_tvm_logs(), _seeded_numpy(seed):
        contexts, weights = [], []
        for index, task in enumerate(todo):
            context, weight = ms.relax_integration.extracted_tasks_to_tune_contexts(
                [task],
                work_dir=str(db_dir / "logs"),
                strategy=_search_strategy(config),
                seed=seed + index,
                num_threads=1,
            )
            contexts += context
            weights += weight
        tally = _Tally(weights=[float(w) for w in weights])
        report = on_progress or (lambda _done, _total, _best: None)
        candidate_builder, candidate_runner = builder(device), runner(device)
        cost_model = ms.cost_model.CostModel.create(config.cost_model, num_tuning_cores=1, tree_method="auto")
        exhausted: set[int] = set()  # tasks whose search space ran out before their trials
        while tally.done < total:
            ids = [i for i in range(len(todo)) if i not in exhausted and tally.per_task.get(i, 0) < config.trials]
            if not ids or (tally.done and deadline is not None and time.perf_counter() > deadline):
                tally.out_of_time = bool(ids)
                break
            before = dict(tally.per_task)
            ms.tune_tasks(
                tasks=[contexts[i] for i in ids],
                task_weights=[weights[i] for i in ids],
                work_dir=str(db_dir),
                max_trials_global=min(total - tally.done, per_round * len(ids)),
                max_trials_per_task=min(per_round, config.trials),
                num_trials_per_iter=min(TRIALS_PER_ITER, config.trials),
                builder=candidate_builder,
                runner=candidate_runner,
                database=ms.database.JSONDatabase(work_dir=str(db_dir)),
                cost_model=cost_model,
                measure_callbacks=[
                    *ms.measure_callback.MeasureCallback.create("default"),
                    _tally_callback(tally, ids, lambda t: report(t.done, total, t.network_ms)),
                ],
                task_scheduler=config.task_scheduler,
            )
            exhausted |= {i for i in ids if tally.per_task.get(i, 0) == before.get(i, 0)}
    return tally


def tune(
    mod: Any,
    device: Device,
    trials_per_task: int | None = None,
    db_dir: Path | None = None,
    on_progress: Callable[[int, int, float | None], None] | None = None,
    seed: int = 0,
    on_start: Callable[[int, int], None] | None = None,
    config: TuningConfig | None = None,
) -> TuneReport:
    """Tune the module's tasks that the database lacks on the device over RPC, with `config` (default: the
    device's `[tuning]`), `trials_per_task` each where given, else `config.trials`.

    With `config.transplant`, a new task whose family (same kernel, other shapes) the database holds gets
    that family's best schedule re-applied and measured first, as the profiler does for its grid; only the
    tasks left are tuned. `on_start(tasks, tasks_reused)` is called once the tasks are known;
    `on_progress(trials_done, trials_total, best_ms)` after each measured batch, `best_ms` being the sum of
    the best kernel time of each task tuned so far times its use count. Raises EdgepruneError when another
    process tunes into the same database, when no server serves the device, or when every candidate failed
    (nothing was measured).
    """
    config = (config or device.tuning).with_changes(trials=trials_per_task)
    start = time.perf_counter()
    db_dir = Path(db_dir or tuning_db_dir(device))
    db_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(db_dir):
        tasks = extract_tasks(mod, device, config)
        reused = _tuned_workloads(db_dir, tasks)
        todo = [t for i, t in enumerate(tasks) if i not in reused]
        if on_start is not None:
            on_start(len(tasks), len(reused))
        if not todo or config.trials <= 0:
            return TuneReport(len(tasks), len(reused), 0, time.perf_counter() - start)
        _require_servers(device)
        transplanted = 0
        if config.transplant:
            done = transplant_from_families(todo, device, db_dir)
            transplanted = len(done)
            todo = [t for i, t in enumerate(todo) if i not in done]
        tally = run_tuning(todo, device, config, db_dir, seed, on_progress) if todo else _Tally([])
    if tally.done and tally.failed == tally.done:
        raise EdgepruneError(
            f"all {tally.done} tuning candidates failed on device '{device.name}': {tally.first_error}",
            hint="check the device with `edgeprune devices check`; --trials 0 compiles untuned",
        )
    seconds = time.perf_counter() - start
    return TuneReport(len(tasks), len(reused), tally.done, seconds, tally.failed, transplanted, tally.out_of_time)


def build(mod: Any, device: Device, db_dir: Path | None = None) -> Any:
    """Compile the Relax module for the device, applying tuned schedules from the database where present."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    target = device.tvm_target()
    db_dir = Path(db_dir or tuning_db_dir(device))
    if (db_dir / "database_tuning_record.json").exists():
        with target, ms.database.JSONDatabase(work_dir=str(db_dir)):
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    return tvm.compile(mod, target=target)
