"""Measure table entries on the device through TVM RPC, one worker thread per RPC server of the farm.

Each entry is a single-layer network built with the schedule `compile` would use for its shape (see `tuned`),
checked against PyTorch, then timed with `time_evaluator` on a server. Builds are serialised in this process
(the exporter and TVM's build are not thread-safe) and, on boards, overlap with measurements. The local farm's
servers share this machine's cores, so there a build never runs during a measurement (it would time the
contention). A server that dies loses nothing: its entry goes back to the queue for the other servers.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune.devices import rpc
from edgeprune.devices.base import Device, TimingSettings
from edgeprune.devices.timing import Timing, run_remote
from edgeprune.devices.tuning import TuningConfig
from edgeprune.errors import EdgepruneError
from edgeprune.profiling import single_layer
from edgeprune.profiling.grid import AnchorKey, PlannedEntry
from edgeprune.profiling.lut import LatencyTable, now
from edgeprune.tvmx import transplant, tune

MAX_ATTEMPTS = 3  # an entry whose measurement fails this often (on any server) is reported, not retried


class _DeviceLost(Exception):
    """The RPC session failed mid-entry: the entry goes back to the queue, the worker reconnects."""


@dataclass
class _Built:
    library: Path
    inputs: np.ndarray
    expected: np.ndarray  # PyTorch's output: a schedule that computes something else is not measured
    workload: Any
    transplanted: Any  # the schedule to commit after measuring, or None when the database already had one


class EntryBuilder:
    """Builds an entry's single-layer network with the schedule `compile` would use for that shape."""

    def __init__(
        self,
        device: Device,
        store: transplant.ScheduleStore,
        anchor_of: dict[AnchorKey, PlannedEntry],
        layout: str,
    ) -> None:
        self.device = device
        self.store = store
        self.anchor_of = anchor_of
        self.layout = layout  # concrete (NCHW, NCHW16c): the kernels the network is compiled with
        self._anchor_traces: dict[AnchorKey, Any] = {}

    def _anchor_trace(self, entry: PlannedEntry) -> Any:
        key = entry.anchor_key(self.layout)
        if key not in self._anchor_traces:
            anchor = self.anchor_of[key]
            _, relax_model = single_layer.to_relax(anchor.family, anchor.in_channels, anchor.out_channels, self.layout)
            record = self.store.best(transplant.task_module(relax_model.mod, self.device))
            if record is None:
                raise EdgepruneError(f"the tuning database has no record for {anchor.key}: the tuning phase failed")
            self._anchor_traces[key] = record.trace
        return self._anchor_traces[key]

    def build(self, entry: PlannedEntry, folder: Path) -> _Built:
        module, relax_model = single_layer.to_relax(entry.family, entry.in_channels, entry.out_channels, self.layout)
        workload = transplant.task_module(relax_model.mod, self.device)
        record = self.store.best(workload)
        sch = None
        if record is None:
            sch = transplant.transplant(workload, self._anchor_trace(entry), self.device)
            record = self.store.record_for(workload, sch)
        lib = transplant.build_with(relax_model.mod, record, self.device)
        # a session keeps earlier libraries loaded: overwriting one by name crashes the server (SIGBUS)
        stem = "entry_" + hashlib.sha256(entry.key.encode()).hexdigest()[:16]
        path = self.device.export(lib, folder, stem=stem)
        inputs = np.random.default_rng(0).standard_normal(relax_model.input_shape).astype("float32")
        with torch.no_grad():
            expected = module(torch.from_numpy(inputs)).numpy()
        return _Built(path, inputs, expected, workload, sch)


class _EntryMeasurer:
    """Builds and measures planned entries from a shared queue, one worker thread per RPC session."""

    def __init__(
        self,
        device: Device,
        table: LatencyTable,
        builder: EntryBuilder,
        settings: TimingSettings,
        on_entry: Callable[[], None],
        exclusive: bool,
    ) -> None:
        self.device = device
        self.table = table
        self.builder = builder
        self.settings = settings
        self.on_entry = on_entry
        self.todo: queue.Queue[PlannedEntry] = queue.Queue()
        self.attempts: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self.device_errors: list[str] = []
        self.measured = 0
        self._in_flight = 0
        self._build_lock = threading.Lock()
        self._state_lock = threading.Lock()
        # servers sharing this machine's cores: a build overlapping a measurement would time the contention
        self._measure_lock: Any = self._build_lock if exclusive else contextlib.nullcontext()

    def run(self, entries: list[PlannedEntry], sessions: list[Any]) -> None:
        """Measure `entries`; each worker owns one session (popped, so a finished worker frees its server)."""
        for entry in entries:
            self.todo.put(entry)
        workers = []
        while sessions:
            workers.append(threading.Thread(target=self._work, args=(sessions.pop(),), daemon=True))
            workers[-1].start()
        for worker in workers:
            worker.join()

    def _reconnect(self) -> Any | None:
        try:
            return self.device.request_session(timeout=10.0)
        except EdgepruneError as exc:
            with self._state_lock:
                self.device_errors.append(exc.message)
            return None

    def _next(self) -> PlannedEntry | None:
        """The next entry; waits while other workers still hold entries that may come back to the queue."""
        while True:
            try:
                entry = self.todo.get(timeout=0.2)
            except queue.Empty:
                with self._state_lock:
                    if self._in_flight == 0:
                        return None
                continue
            with self._state_lock:
                self._in_flight += 1
            return entry

    def _finish(self, entry: PlannedEntry, error: str | None = None, retry: bool = False) -> None:
        with self._state_lock:
            self._in_flight -= 1
            if retry:
                self.device_errors.append(str(error).splitlines()[0])
                self.attempts[entry.key] = self.attempts.get(entry.key, 0) + 1
                if self.attempts[entry.key] < MAX_ATTEMPTS:
                    self.todo.put(entry)
                    return
                error = f"measurement failed {MAX_ATTEMPTS} times, last: {self.device_errors[-1]}"
            if error is not None:
                self.failed[entry.key] = error

    def _work(self, session: Any) -> None:
        while (entry := self._next()) is not None:
            try:
                self._process(entry, session)
            except _DeviceLost as lost:
                self._finish(entry, str(lost), retry=True)
                session = self._reconnect()
                if session is None:
                    return
            except EdgepruneError as exc:
                self._finish(entry, exc.message)
            except Exception as exc:  # noqa: BLE001 - a failed build is this entry's failure, not the run's
                self._finish(entry, f"{type(exc).__name__}: {exc}")
            else:
                self._finish(entry)

    def _process(self, entry: PlannedEntry, session: Any) -> None:
        with tempfile.TemporaryDirectory(prefix="edgeprune-entry-") as folder:
            with self._build_lock:
                built = self.builder.build(entry, Path(folder))
            try:
                with self._measure_lock:
                    timing, output = run_remote(session, self.device, built.library, built.inputs, self.settings)
            except Exception as exc:  # noqa: BLE001 - a lost server surfaces as several TVM/socket types
                raise _DeviceLost(f"{type(exc).__name__}: {exc}") from exc
        scale = 1e-3 * (1.0 + float(np.abs(built.expected).max()))
        if output.shape != built.expected.shape or not np.allclose(output, built.expected, rtol=1e-3, atol=scale):
            raise EdgepruneError("the compiled kernel's output differs from PyTorch's")
        self._store(entry, built, timing)

    def _store(self, entry: PlannedEntry, built: _Built, timing: Timing) -> None:
        if built.transplanted is not None:
            self.builder.store.commit(built.workload, built.transplanted, timing.median_ms)
        record = {
            **{k: round(v, 6) if isinstance(v, float) else v for k, v in timing.to_json().items()},
            "measured_at": now(),
            "schedule": "transplanted" if built.transplanted is not None else "database",
        }
        with self._state_lock:
            self.table.entries[entry.key] = record
            self.table.save()
            self.measured += 1
        self.on_entry()


def _sessions(device: Device, parallel: bool) -> list[Any]:
    """One session per server registered under the device's key (just one unless `parallel`).

    Servers still finishing a previous session show as busy for a moment, so each is waited for briefly.
    """
    sessions = [device.request_session()]
    if parallel:
        counts = rpc.server_counts(rpc.tracker_summary(device.tracker_host, device.tracker_port))
        servers = counts.get(device.key, {})
        for _ in range(servers.get("free", 0) + servers.get("busy", 0) - 1):
            try:
                sessions.append(device.request_session(timeout=5.0))
            except EdgepruneError:
                break
    return sessions


def tune_anchors(
    device: Device,
    anchors: list[PlannedEntry],
    config: TuningConfig,
    on_tuned: Callable[[tune.TuneReport], None] | None = None,
) -> None:
    """Tune each anchor's single-layer network where the database lacks its shape: the anchors tuning the
    full-width network did not cover (a family's other kernel kind, see `grid.anchors`); the others are
    reused at once. `config` is the profile's (its trials and layout)."""
    layout = config.conv_layout(device.target, device.channel_step)
    for anchor in anchors:
        _, relax_model = single_layer.to_relax(anchor.family, anchor.in_channels, anchor.out_channels, layout)
        report = tune.tune(relax_model.mod, device, config=config)
        if on_tuned is not None:
            on_tuned(report)


def measure_entries(
    device: Device,
    table: LatencyTable,
    entries: list[PlannedEntry],
    anchor_of: dict[AnchorKey, PlannedEntry],
    settings: TimingSettings | None = None,
    parallel: bool = False,
    on_entry: Callable[[], None] | None = None,
    exclusive: bool | None = None,
    tuning: TuningConfig | None = None,
    on_anchor_tuned: Callable[[tune.TuneReport], None] | None = None,
) -> int:
    """Measure `entries` into `table` (saved after each); returns how many servers were used.

    `anchor_of` (`grid.anchors`) names, per family and kernel kind, the tuned shape whose schedule the
    other shapes reuse; an anchor the database lacks is tuned first with `tuning` (default: the device's
    profile settings), each reported to `on_anchor_tuned`. `exclusive` (default: for the local device)
    keeps builds in this process from overlapping measurements, because the servers run on this machine's
    cores; boards measure while the next entry builds. Raises EdgepruneError when the servers are lost or
    entries fail; what was measured stays in the table.
    """
    if not entries:
        return 0
    config = tuning or device.tuning.for_profile()
    layout = config.conv_layout(device.target, device.channel_step)
    needed = {entry.anchor_key(layout) for entry in entries}
    tune_anchors(device, [anchor for key, anchor in anchor_of.items() if key in needed], config, on_anchor_tuned)
    exclusive = device.shares_host_cores if exclusive is None else exclusive
    with transplant.ScheduleStore.open(device) as store:
        builder = EntryBuilder(device, store, anchor_of, layout)
        settings = settings or device.timing
        measurer = _EntryMeasurer(device, table, builder, settings, on_entry or (lambda: None), exclusive)
        sessions = _sessions(device, parallel)
        servers = len(sessions)
        measurer.run(entries, sessions)
    left = len(entries) - measurer.measured - len(measurer.failed)
    if left:
        last = measurer.device_errors[-1] if measurer.device_errors else "no server answered"
        raise EdgepruneError(
            f"profiling stopped: lost the device's RPC servers ({last}); {measurer.measured} entries were "
            f"measured and saved in {table.path}, {left} are missing",
            hint="check the device (`edgeprune devices check`), then run the same command again to resume",
        )
    if measurer.failed:
        first = next(iter(measurer.failed.items()))
        raise EdgepruneError(
            f"{len(measurer.failed)} entries could not be measured (first: {first[0]}: {first[1]}); "
            f"{measurer.measured} were saved in {table.path}",
            hint="run the same command again to retry them",
        )
    return servers
