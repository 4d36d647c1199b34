"""The tuning building blocks `tune` and `transplant` share: the device's tuning database (where, and one writer
at a time), the tunable tasks of a module, and how a candidate schedule is built (in a forked child, under a
time limit) and measured on the device. Its own module so that `tune` (which transplants before it tunes) and
`transplant` (which measures as `tune` does) both import it instead of each other.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeprune import atomic
from edgeprune.devices.base import Device
from edgeprune.devices.tuning import TuningConfig
from edgeprune.errors import EdgepruneError
from edgeprune.tvmx import forked

_log = logging.getLogger(__name__)


def tuning_db_dir(device: Device) -> Path:
    """The device's one tuning database, beside its latency table: `<profiles folder>/<device>/tuning/`."""
    return device.lut_dir / "tuning"


BUILD_TIMEOUT_S = 120.0
"""The most one candidate may take to build and link on the host: candidates build in well under a second here,
and TVM's compiler was seen spinning 14 min on one (edgeprune.tvmx.forked says why that needs a child process)."""


def builder(device: Device, timeout_s: float = BUILD_TIMEOUT_S) -> Any:
    from tvm import tirx
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    def build_one(item_and_folder: tuple[Any, str]) -> str:
        item, folder = item_and_folder
        lib = tirx.build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(item.mod), item.target)
        return str(device.export(lib, Path(folder), stem="candidate"))

    @derived_object
    class ForkedBuilder(ms.builder.PyBuilder):
        """Builds each batch of candidates in a forked child of this process (no worker start-up: the default
        LocalBuilder's workers import TVM's tensor intrinsics each, 45-96 s) and links them for the device
        (cross compiler or .tar); a candidate over `timeout_s` is a failed candidate."""

        def build(self, build_inputs: list[Any]) -> list[Any]:
            folders = [tempfile.mkdtemp(prefix="edgeprune-ms-") for _ in build_inputs]
            outcomes = forked.map_forked(build_one, list(zip(build_inputs, folders, strict=True)), timeout_s)
            results = []
            for outcome, folder in zip(outcomes, folders, strict=True):
                if outcome.error is not None:
                    shutil.rmtree(folder, ignore_errors=True)
                    if outcome.timed_out:
                        _log.warning("a candidate schedule's build %s in TVM's compiler: skipped", outcome.error)
                results.append(ms.builder.BuilderResult(outcome.value, outcome.error))
            return results

    return ForkedBuilder()


def runner(device: Device, number: int = 3, repeat: int = 1, min_repeat_ms: int = 20) -> Any:
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


def measure_schedules(device: Device, schedules: list[Any]) -> list[float | None]:
    """Build and run TIR schedules on the device as MetaSchedule measures its candidates: the mean run time
    of each in seconds, None where it failed to build or run."""
    from tvm.s_tir import meta_schedule as ms

    target = device.tvm_target()
    built = builder(device).build([ms.builder.BuilderInput(sch.mod, target) for sch in schedules])
    inputs = [
        ms.runner.RunnerInput(b.artifact_path, device.runtime_kind, ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"]))
        for b, sch in zip(built, schedules, strict=True)
        if b.error_msg is None
    ]
    measurer = runner(device)
    try:
        runs = iter([future.result() for future in measurer.run(inputs)])
    finally:
        measurer.pool.shutdown()  # here: left to the collector, it may run in a pool thread that cannot join itself
        for b in built:
            if b.artifact_path is not None:
                shutil.rmtree(Path(b.artifact_path).parent, ignore_errors=True)
    seconds: list[float | None] = []
    for b in built:
        run = next(runs) if b.error_msg is None else None
        ok = run is not None and run.error_msg is None and run.run_secs
        seconds.append(sum(float(s) for s in run.run_secs) / len(run.run_secs) if ok else None)
    return seconds


def extract_tasks(mod: Any, device: Device, config: TuningConfig | None = None) -> list[Any]:
    """The tasks of a legalized Relax module that `config` tunes (default: the device's; convolutions and
    dense layers unless its `ops` says otherwise)."""
    from tvm.s_tir import meta_schedule as ms

    config = config or device.tuning
    return [t for t in ms.relax_integration.extract_tasks(mod, device.tvm_target()) if config.tunes(t.task_name)]


@contextlib.contextmanager
def exclusive(db_dir: Path) -> Iterator[None]:
    """One writer per database: MetaSchedule numbers workloads per process, so two processes appending to
    the same JSON database would point records at each other's workloads. A second process waits its turn,
    saying for whom (two runs on one shared board take turns; the later one then reuses what the first tuned)."""
    busy = EdgepruneError(f"another edgeprune process is tuning into {db_dir}")  # never raised: it waits

    def waiting(holder: str) -> None:
        _log.warning("waiting for %s, which is tuning into %s", holder, db_dir)

    with atomic.sole_writer(db_dir / ".lock", busy, waiting):
        yield
