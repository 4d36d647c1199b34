"""Tuned schedules for table entries, shared with `compile` through the device's MetaSchedule database.

Tuning every grid point costs ~3 s per trial on a small CPU; measured here, re-applying the tuned schedule of
a family's full-width layer to a narrower shape (same sketch, tile sizes adapted to the new extents) gave
kernels as fast as or faster than 16 fresh trials on that shape, for the cost of one build. So an entry runs:
the database's best record for its exact workload if there is one (what `compile` would ship), else the
family anchor's schedule transplanted; the transplanted record is committed to the database with its
measured time, so the network `compile` builds later runs exactly the kernel the table measured.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeprune.devices.base import Device
from edgeprune.devices.tuning import TuningConfig
from edgeprune.errors import EdgepruneError
from edgeprune.tvmx import measure


class TransplantError(EdgepruneError):
    """The anchor's schedule does not apply to this shape (the entry is reported as failed)."""


def adapt_tiles(extent: int, factors: list[int]) -> list[int]:
    """A perfect tiling of `extent` close to `factors`: inner factors kept where they divide, rest outermost.

    Inner tiles carry the vector width and register blocking that tuning found; the outermost loop absorbs
    the change in size (it is the one parallelised across cores).
    """
    new = list(factors)
    remaining = extent
    for index in range(len(factors) - 1, 0, -1):
        new[index] = math.gcd(int(factors[index]), remaining)
        remaining //= new[index]
    new[0] = remaining
    return new


def task_module(relax_mod: Any, device: Device) -> Any:
    """The single tunable TIR workload of a single-layer network (its MetaSchedule task's module)."""
    tasks = measure.extract_tasks(relax_mod, device, TuningConfig())  # conv and dense: one per layer
    if len(tasks) != 1:
        names = [t.task_name for t in tasks]
        raise EdgepruneError(f"expected one tunable kernel in a single-layer network, found {len(tasks)}: {names}")
    return tasks[0].dispatched[0]


def transplant(workload: Any, trace: Any, device: Device) -> Any:
    """Apply a tuned trace to another shape of the same kernel, then MetaSchedule's CPU postprocessing.

    The postprocessors are created directly: a TuneContext would import TVM's tensor intrinsics (30-80 s)
    for rules this replay does not use; it gave the same schedule when this was written.
    """
    import tvm
    from tvm.s_tir import meta_schedule as ms

    sch = tvm.s_tir.Schedule(workload)

    def provide(inst: Any, inputs: list[Any], _attrs: Any, decision: Any) -> Any:
        if inst.kind.name == "SamplePerfectTile":
            return adapt_tiles(int(sch.get(inputs[0]).extent), [int(d) for d in decision])
        return decision

    try:
        trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=provide)
        sch.enter_postproc()
        for postproc in ms.postproc.Postproc.create(device.target["kind"]):
            if not postproc.apply(sch):
                raise TransplantError(f"postprocessor {type(postproc).__name__} rejected the transplanted schedule")
    except TransplantError:
        raise
    except Exception as exc:  # noqa: BLE001 - TVM raises several types when a trace does not fit
        raise TransplantError(f"the anchor schedule does not apply: {type(exc).__name__}: {exc}") from exc
    return sch


class ScheduleStore:
    """The device's tuning database, shared by the profiling threads (under a lock). Use `open`: it holds
    the database's cross-process lock while the store is in use, since MetaSchedule numbers workloads per
    process and a concurrent writer would point records at the wrong workloads."""

    def __init__(self, device: Device, db_dir: Path) -> None:
        from tvm.s_tir import meta_schedule as ms

        self.device = device
        self._db = ms.database.JSONDatabase(work_dir=str(db_dir))
        self._lock = threading.Lock()

    @classmethod
    @contextlib.contextmanager
    def open(cls, device: Device) -> Iterator[ScheduleStore]:
        db_dir = measure.tuning_db_dir(device)
        db_dir.mkdir(parents=True, exist_ok=True)
        with measure.exclusive(db_dir):
            yield cls(device, db_dir)

    def best(self, workload: Any) -> Any | None:
        """The best tuning record of this exact workload, or None."""
        with self._lock:
            if not self._db.has_workload(workload):
                return None
            records = self._db.get_top_k(self._db.commit_workload(workload), 1)
        return records[0] if records else None

    def top_records(self) -> list[Any]:
        """The best measured record of every workload in the database."""
        import tvm_ffi

        with self._lock:
            records = self._db.get_all_tuning_records()
        best: dict[int, Any] = {}
        for record in records:
            secs = [float(s) for s in record.run_secs or []]
            if not secs or max(secs) >= 1e9:  # MetaSchedule records a failed candidate as 1e10 s
                continue
            mean = sum(secs) / len(secs)
            key = int(tvm_ffi.structural_hash(record.workload.mod))
            if key not in best or mean < best[key][0]:
                best[key] = (mean, record)
        return [record for _, record in best.values()]

    def record_for(self, workload: Any, sch: Any, run_ms: float | None = None) -> Any:
        """A tuning record of `sch` for `workload` (not stored)."""
        from tvm.s_tir import meta_schedule as ms

        return ms.database.TuningRecord(
            sch.trace,
            ms.database.Workload(workload),
            [run_ms / 1e3] if run_ms is not None else None,
            self.device.tvm_target(),
            ms.arg_info.ArgInfo.from_prim_func(workload["main"]),
        )

    def commit(self, workload: Any, sch: Any, run_ms: float) -> None:
        """Store a measured schedule; `compile` then reuses it for this shape instead of tuning it."""
        from tvm.s_tir import meta_schedule as ms

        with self._lock:
            committed = self._db.commit_workload(workload)
            record = self.record_for(workload, sch, run_ms)
            self._db.commit_tuning_record(
                ms.database.TuningRecord(record.trace, committed, record.run_secs, record.target, record.args_info)
            )


def family_key(workload: Any) -> str:
    """What a kernel is apart from its channel counts: its TIR with every digit run blanked (extents, and the
    numbered names a network gives its buffers), and the spatial extents of its 4-D buffers (NCHW feature maps
    and OIHW weights: input, kernel and output sizes, which fix stride and padding too). Channel-pruned shapes
    of one layer share it; a different kernel size, stride, padding, feature map or fusion does not (blanked
    alone, a 3x3 and a 5x5 convolution, or strides 2 and 3, read the same)."""
    spatial = [shape[2:4] for shape in _shapes(workload) if len(shape) in (4, 5, 6)]  # blocked: NCHWc, OIHWio
    return re.sub(r"\d+", "N", workload.script()) + f"|{spatial}"


def _shapes(workload: Any) -> list[list[int]]:
    """The shapes of the kernel's buffer arguments, in order."""
    from tvm.s_tir import meta_schedule as ms

    return [[int(d) for d in arg.shape] for arg in ms.arg_info.ArgInfo.from_prim_func(workload["main"])]


def _extents(workload: Any) -> list[int]:
    return [d for shape in _shapes(workload) for d in shape]


def _distance(a: list[int], b: list[int]) -> float:
    """How far apart two shapes of one family are (sum of |log ratio| over their extents)."""
    return sum(abs(math.log(x / y)) for x, y in zip(a, b, strict=True))


def transplant_from_families(tasks: list[Any], device: Device, db_dir: Path) -> set[int]:
    """For each task without a record, the best schedule of its family's nearest tuned shape in the database,
    transplanted, measured on the device and committed (what `compile` then builds); the indices of the
    tasks so served. Tasks whose family the database lacks, or whose transplant fails, are left to tuning.
    The caller holds the database's lock."""
    store = ScheduleStore(device, db_dir)
    family_records: dict[str, list[tuple[list[int], Any]]] = {}
    for record in store.top_records():
        mod = record.workload.mod
        family_records.setdefault(family_key(mod), []).append((_extents(mod), record))
    chosen: dict[int, Any] = {}
    for index, task in enumerate(tasks):
        workload = task.dispatched[0]
        shape = _extents(workload)
        candidates = sorted(
            (_distance(shape, extents), n, record)
            for n, (extents, record) in enumerate(family_records.get(family_key(workload), []))
            if len(extents) == len(shape)
        )
        for _, _, record in candidates[:2]:
            with contextlib.suppress(TransplantError):
                chosen[index] = transplant(workload, record.trace, device)
                break
    if not chosen:
        return set()
    seconds = measure.measure_schedules(device, list(chosen.values()))
    done = set()
    for (index, sch), secs in zip(chosen.items(), seconds, strict=True):
        if secs is not None:
            store.commit(tasks[index].dispatched[0], sch, secs * 1e3)
            done.add(index)
    return done


def build_with(relax_mod: Any, record: Any, device: Device) -> Any:
    """Compile as `tvmx.tune.build` does, with `record` as the only database entry."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    target = device.tvm_target()
    database = ms.database.MemoryDatabase()
    workload = database.commit_workload(record.workload.mod)
    database.commit_tuning_record(
        ms.database.TuningRecord(record.trace, workload, record.run_secs or [1.0], target, record.args_info)
    )
    with target, database:
        relax_mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(relax_mod)
    return tvm.compile(relax_mod, target=target)
