"""MetaSchedule tuning measured on the device through RPC, with one persistent tuning database per device.

Records are keyed by workload shape, so the database that tunes one network serves its pruned variants, the
latency table's single-layer modules and later compiles: every stage asks `tuning_db_dir(device)`.
Builds run in-process (the default LocalBuilder re-imports TVM in fresh workers every batch and times out
on small machines); candidates run on the device's RPC servers through the tracker.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune import atomic
from edgeprune.devices import rpc
from edgeprune.devices.base import Device
from edgeprune.errors import EdgepruneError

TUNED_OPS = ("conv2d", "matmul", "dense")
TRIALS_PER_ITER = 16


def tuning_db_dir(device: Device) -> Path:
    """The device's one tuning database, beside its latency table: `<profiles folder>/<device>/tuning/`."""
    return device.lut_dir / "tuning"


@dataclass
class TuneReport:
    tasks: int
    tasks_reused: int
    trials: int
    seconds: float
    failed: int = 0  # candidates that did not build or run; their time is not a measurement


@dataclass
class _Tally:
    """What the measured batches reported so far: trials, failures, each task's best kernel time."""

    weights: list[float]
    done: int = 0
    failed: int = 0
    first_error: str | None = None
    best_ms: dict[int, float] = field(default_factory=dict)

    @property
    def network_ms(self) -> float | None:
        """Sum of each task's best time times its use count: an estimate of the tuned network's kernels."""
        return sum(ms * self.weights[i] for i, ms in self.best_ms.items()) if self.best_ms else None


class _OwnRecordsOnly(logging.Filter):
    """Drops the records MetaSchedule's top logger emits itself (its log-directory line and level nag)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet_tvm_logs() -> Iterator[None]:
    """Keep MetaSchedule off our terminal: its console handler writes to *stdout* (which would break
    `--json`) at the level its logger has when tuning starts; its full logs stay in the database's logs/.
    """
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    old = logger.level
    quiet = _OwnRecordsOnly()
    # MetaSchedule rebuilds its logging config from the logger's handlers by name on every tuning run and
    # fails on an unnamed one (pytest's capture handlers, or an embedding application's): detach those meanwhile
    unnamed = [h for h in logger.handlers if h.get_name() is None]
    for handler in unnamed:
        logger.removeHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.addFilter(quiet)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logger.removeFilter(quiet)
        logger.setLevel(old)
        for handler in unnamed:
            logger.addHandler(handler)


def _builder(device: Device) -> Any:
    from tvm import tirx
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    @derived_object
    class InProcessBuilder(ms.builder.PyBuilder):
        """Builds candidates in this process and links them for the device (cross compiler or .tar)."""

        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            for item in build_inputs:
                try:
                    lib = tirx.build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(item.mod), item.target)
                    folder = tempfile.mkdtemp(prefix="edgeprune-ms-")
                    path = device.export(lib, Path(folder), stem="candidate")
                    results.append(ms.builder.BuilderResult(str(path), None))
                except Exception as exc:  # noqa: BLE001 - a failed candidate is a result, not a crash
                    results.append(ms.builder.BuilderResult(None, f"{type(exc).__name__}: {exc}"))
            return results

    return InProcessBuilder()


def _runner(device: Device, number: int = 3, repeat: int = 1, min_repeat_ms: int = 20) -> Any:
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.RPCRunner(
        ms.runner.RPCConfig(
            tracker_host=device.tracker_host,
            tracker_port=device.tracker_port,
            tracker_key=device.key,
            session_timeout_sec=60,
        ),
        ms.runner.EvaluatorConfig(
            number=number, repeat=repeat, min_repeat_ms=min_repeat_ms, enable_cpu_cache_flush=False
        ),
        max_workers=1,
    )


def _tally_callback(tally: _Tally, on_batch: Callable[[_Tally], None]) -> Any:
    """A measure callback that counts each batch's trials and failures and keeps each task's best time."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Tally(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler: Any, task_id: int, candidates: Any, builds: Any, runs: Any) -> None:
            for built, run in zip(builds, runs, strict=True):
                tally.done += 1
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


def extract_tasks(mod: Any, device: Device) -> list[Any]:
    """The tunable tasks of a legalized Relax module (convolutions and dense layers)."""
    from tvm.s_tir import meta_schedule as ms

    tasks = ms.relax_integration.extract_tasks(mod, device.tvm_target())
    return [t for t in tasks if any(op in t.task_name for op in TUNED_OPS)]


@contextlib.contextmanager
def exclusive(db_dir: Path) -> Iterator[None]:
    """One writer per database: MetaSchedule numbers workloads per process, so two processes appending to
    the same JSON database would point records at each other's workloads."""
    busy = EdgepruneError(
        f"another edgeprune process is tuning into {db_dir}",
        hint="wait for it to finish: what it tunes is then reused here",
    )
    with atomic.sole_writer(db_dir / ".lock", busy):
        yield


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


def _run_tuning(
    todo: list[Any],
    device: Device,
    trials_per_task: int,
    db_dir: Path,
    seed: int,
    on_progress: Callable[[int, int, float | None], None] | None,
) -> _Tally:
    """MetaSchedule over the tasks in `todo`: in-process builds, candidates run on the device over RPC."""
    from tvm.s_tir import meta_schedule as ms

    total = trials_per_task * len(todo)
    device.prepare_tuning()
    with _quiet_tvm_logs():
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            todo, work_dir=str(db_dir / "logs"), strategy="replay-trace", seed=seed, num_threads=1
        )
        tally = _Tally(weights=[float(w) for w in weights])
        report = on_progress or (lambda _done, _total, _best: None)
        callbacks = [
            *ms.measure_callback.MeasureCallback.create("default"),
            _tally_callback(tally, lambda t: report(t.done, total, t.network_ms)),
        ]
        ms.tune_tasks(
            tasks=contexts,
            task_weights=weights,
            work_dir=str(db_dir),
            max_trials_global=total,
            max_trials_per_task=trials_per_task,
            num_trials_per_iter=min(TRIALS_PER_ITER, trials_per_task),
            builder=_builder(device),
            runner=_runner(device),
            database=ms.database.JSONDatabase(work_dir=str(db_dir)),
            cost_model="random",
            measure_callbacks=callbacks,
            task_scheduler="round-robin",
        )
    return tally


def tune(
    mod: Any,
    device: Device,
    trials_per_task: int,
    db_dir: Path | None = None,
    on_progress: Callable[[int, int, float | None], None] | None = None,
    seed: int = 0,
    on_start: Callable[[int, int], None] | None = None,
) -> TuneReport:
    """Tune the module's tasks that the database lacks, `trials_per_task` each, on the device over RPC.

    `on_start(tasks, tasks_reused)` is called once the tasks are known; `on_progress(trials_done,
    trials_total, best_ms)` after each measured batch, `best_ms` being the sum of the best kernel time of
    each task tuned so far times its use count. Raises EdgepruneError when another process tunes into the
    same database, when no server serves the device, or when every candidate failed (nothing was measured).
    """
    start = time.perf_counter()
    db_dir = Path(db_dir or tuning_db_dir(device))
    db_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(db_dir):
        tasks = extract_tasks(mod, device)
        reused = _tuned_workloads(db_dir, tasks)
        todo = [t for i, t in enumerate(tasks) if i not in reused]
        if on_start is not None:
            on_start(len(tasks), len(reused))
        if not todo or trials_per_task <= 0:
            return TuneReport(len(tasks), len(reused), 0, time.perf_counter() - start)
        _require_servers(device)
        tally = _run_tuning(todo, device, trials_per_task, db_dir, seed, on_progress)
    if tally.done and tally.failed == tally.done:
        raise EdgepruneError(
            f"all {tally.done} tuning candidates failed on device '{device.name}': {tally.first_error}",
            hint="check the device with `edgeprune devices check`; --trials 0 compiles untuned",
        )
    return TuneReport(len(tasks), len(reused), tally.done, time.perf_counter() - start, tally.failed)


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
