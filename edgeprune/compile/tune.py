"""MetaSchedule tuning measured on the device through RPC, with one persistent tuning database per device.

Records are keyed by workload shape, so the database that tunes one network serves its pruned variants, the
latency table's single-layer modules and later compiles: every stage asks `tuning_db_dir(device)`.
Builds run in-process (the default LocalBuilder re-imports TVM in fresh workers every batch and times out
on small machines); candidates run on the device's RPC servers through the tracker.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.devices import toolchain
from edgeprune.devices.profile import DeviceProfile

TUNED_OPS = ("conv2d", "matmul", "dense")
TRIALS_PER_ITER = 16


def tuning_db_dir(device: DeviceProfile) -> Path:
    """The device's one tuning database, beside its latency table: `device_profiles/<device>/tuning/`."""
    return device.lut_dir / "tuning"


@dataclass
class TuneReport:
    tasks: int
    tasks_reused: int
    trials: int
    seconds: float


@contextlib.contextmanager
def _quiet_tvm_logs() -> Iterator[None]:
    """MetaSchedule logs every round at INFO to the root logger; keep the terminal for our progress bar."""
    import logging

    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def _builder(device: DeviceProfile) -> Any:
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
                    path = toolchain.export(lib, Path(folder), device, stem="candidate")
                    results.append(ms.builder.BuilderResult(str(path), None))
                except Exception as exc:  # noqa: BLE001 - a failed candidate is a result, not a crash
                    results.append(ms.builder.BuilderResult(None, f"{type(exc).__name__}: {exc}"))
            return results

    return InProcessBuilder()


def _runner(device: DeviceProfile, number: int = 3, repeat: int = 1, min_repeat_ms: int = 20) -> Any:
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


def _progress_callback(on_trials: Callable[[int, float | None], None]) -> Any:
    """Reports trials done and the sum over tasks of each task's best kernel time (a lower bound of the net)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    best: dict[int, float] = {}
    done = [0]

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler: Any, task_id: int, candidates: Any, builds: Any, runs: Any) -> None:
            for run in runs:
                done[0] += 1
                if run.run_secs and run.error_msg is None:
                    ms_value = sum(float(s) for s in run.run_secs) / len(run.run_secs) * 1e3
                    best[task_id] = min(best.get(task_id, ms_value), ms_value)
            on_trials(done[0], sum(best.values()) if best else None)

    return Progress()


def extract_tasks(mod: Any, device: DeviceProfile) -> list[Any]:
    """The tunable tasks of a legalized Relax module (convolutions and dense layers)."""
    from tvm.s_tir import meta_schedule as ms

    tasks = ms.relax_integration.extract_tasks(mod, toolchain.tvm_target(device))
    return [t for t in tasks if any(op in t.task_name for op in TUNED_OPS)]


def _tuned_workloads(db_dir: Path, tasks: list[Any]) -> set[int]:
    """Indices of tasks the database already holds records for (these are reused, not tuned again)."""
    from tvm.s_tir import meta_schedule as ms

    if not (db_dir / "database_tuning_record.json").exists():
        return set()
    db = ms.database.JSONDatabase(work_dir=str(db_dir))
    return {i for i, t in enumerate(tasks) if db.has_workload(t.dispatched[0])}


def tune(
    mod: Any,
    device: DeviceProfile,
    trials_per_task: int,
    db_dir: Path | None = None,
    on_progress: Callable[[int, int, float | None], None] | None = None,
    seed: int = 0,
) -> TuneReport:
    """Tune the module's tasks that the database lacks, `trials_per_task` each, on the device over RPC.

    `on_progress(trials_done, trials_total, best_ms)` is called after each measured batch.
    """
    from tvm.s_tir import meta_schedule as ms

    start = time.perf_counter()
    db_dir = Path(db_dir or tuning_db_dir(device))
    db_dir.mkdir(parents=True, exist_ok=True)
    tasks = extract_tasks(mod, device)
    reused = _tuned_workloads(db_dir, tasks)
    todo = [t for i, t in enumerate(tasks) if i not in reused]
    total = trials_per_task * len(todo)
    if not todo or trials_per_task <= 0:
        return TuneReport(len(tasks), len(reused), 0, time.perf_counter() - start)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        todo, work_dir=str(db_dir / "logs"), strategy="replay-trace", seed=seed, num_threads=1
    )
    callbacks = ms.measure_callback.MeasureCallback.create("default")
    if on_progress is not None:
        callbacks = [*callbacks, _progress_callback(lambda n, best: on_progress(n, total, best))]
    with _quiet_tvm_logs():
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
    return TuneReport(len(tasks), len(reused), total, time.perf_counter() - start)


def build(mod: Any, device: DeviceProfile, db_dir: Path | None = None) -> Any:
    """Compile the Relax module for the device, applying tuned schedules from the database where present."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    target = toolchain.tvm_target(device)
    db_dir = Path(db_dir or tuning_db_dir(device))
    if (db_dir / "database_tuning_record.json").exists():
        with target, ms.database.JSONDatabase(work_dir=str(db_dir)):
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    return tvm.compile(mod, target=target)
