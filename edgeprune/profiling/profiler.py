"""Measure a model's table entries on the device through TVM RPC, over every free server of the farm.

Phases: (1) tune the full-width network with MetaSchedule on the device (only tasks the shared database
lacks): these records are the family anchors; (2) calibrate: the unpruned network, built as `compile`
builds it, measured in alternation with its layers' kernels; (3) measure every missing grid entry: build
the single-layer network with its tuned schedule (see `tuned`), check its output against PyTorch, run
`time_evaluator` on a server, write the entry. Each RPC server gets one worker thread with its own session;
builds are serialised in this process (the exporter and TVM's build are not thread-safe) and, on boards,
overlap with measurements. The local farm's servers share this machine's cores, so there a build never
runs during a measurement (it would time the contention). A server that dies loses nothing: its entry
goes back to the queue for the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune.compile import tune
from edgeprune.devices import measure, rpc, toolchain
from edgeprune.devices.farm import ensure_farm
from edgeprune.devices.profile import DeviceProfile
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import ModelBundle
from edgeprune.profiling import single_layer, tuned
from edgeprune.profiling.defaults import MAX_GRID_POINTS, MIN_REPEAT_MS, NUMBER, REPEAT, TRIALS
from edgeprune.profiling.lut import LatencyTable, exclusive, now
from edgeprune.profiling.signature import DEPTHWISE, Family, Layer, LayerExtractor

CALIBRATION_ROUNDS = 5  # alternations of the network and its layers when measuring the calibration
MAX_ATTEMPTS = 3  # an entry whose measurement fails this often (on any server) is reported, not retried

Progress = Callable[[str, int, int], None]  # (phase, done, total); phases: "tuning", "network", "entries"


@dataclass(frozen=True)
class PlannedEntry:
    family: Family
    in_channels: int
    out_channels: int

    @property
    def key(self) -> str:
        return self.family.entry_key(self.in_channels, self.out_channels)


@dataclass
class ProfileReport:
    lut: Path
    entries_measured: int
    entries_reused: int
    entries_total: int
    seconds: float
    servers: int
    network_ms: float | None
    tuning: tune.TuneReport | None = None
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "lut": str(self.lut),
            "entries_measured": self.entries_measured,
            "entries_reused": self.entries_reused,
            "entries_total": self.entries_total,
            "seconds": round(self.seconds, 2),
            "servers": self.servers,
            "network_ms": self.network_ms,
            "tuning_trials": self.tuning.trials if self.tuning else 0,
            "tuning_tasks_reused": self.tuning.tasks_reused if self.tuning else 0,
            "phase_seconds": {k: round(v, 2) for k, v in self.phase_seconds.items()},
        }


def default_step(channels: int, lanes: int) -> int:
    """The device's vector width in fp32 lanes; a multiple of it for wide layers (at most 4 points per
    dimension); half of it for a layer narrower than two vectors, so that layer can be pruned at all."""
    step = lanes * max(1, -(-channels // (lanes * MAX_GRID_POINTS)))
    if channels < 2 * step and step == lanes and lanes > 1:
        step = lanes // 2
    return step


def grid_values(channels: int, step: int) -> list[int]:
    """Multiples of `step` up to `channels`, plus `channels` itself (the unpruned width is always exact)."""
    return sorted({*range(step, channels + 1, step), channels})


def plan(layers: list[Layer], lanes: int, step: int | None = None) -> dict[str, PlannedEntry]:
    """Every grid entry the model's layers need, deduplicated by signature (shared families count once)."""
    planned: dict[str, PlannedEntry] = {}
    for layer in layers:
        ins = (
            [layer.in_channels]
            if layer.slot.in_fixed
            else grid_values(layer.in_channels, step or default_step(layer.in_channels, lanes))
        )
        outs = (
            [layer.out_channels]
            if layer.slot.out_fixed
            else grid_values(layer.out_channels, step or default_step(layer.out_channels, lanes))
        )
        pairs = [(c, c) for c in outs] if layer.family.kind == DEPTHWISE else [(i, o) for i in ins for o in outs]
        for cin, cout in pairs:
            entry = PlannedEntry(layer.family, cin, cout)
            planned.setdefault(entry.key, entry)
    return planned


def anchors(layers: list[Layer]) -> dict[str, PlannedEntry]:
    """Per family, its widest layer in the unpruned model: the shape tuning sees, whose schedule is reused."""
    widest: dict[str, PlannedEntry] = {}
    for layer in layers:
        current = widest.get(layer.family.key)
        if current is None or layer.in_channels * layer.out_channels > current.in_channels * current.out_channels:
            widest[layer.family.key] = PlannedEntry(layer.family, layer.in_channels, layer.out_channels)
    return widest


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

    def __init__(self, device: DeviceProfile, store: tuned.ScheduleStore, anchor_of: dict[str, PlannedEntry]) -> None:
        self.device = device
        self.store = store
        self.anchor_of = anchor_of
        self._anchor_traces: dict[str, Any] = {}

    def _anchor_trace(self, family: Family) -> Any:
        if family.key not in self._anchor_traces:
            anchor = self.anchor_of[family.key]
            _, relax_model = single_layer.to_relax(family, anchor.in_channels, anchor.out_channels)
            record = self.store.best(tuned.task_module(relax_model.mod, self.device))
            if record is None:
                raise EdgepruneError(f"the tuning database has no record for {anchor.key}: the tuning phase failed")
            self._anchor_traces[family.key] = record.trace
        return self._anchor_traces[family.key]

    def build(self, entry: PlannedEntry, folder: Path) -> _Built:
        module, relax_model = single_layer.to_relax(entry.family, entry.in_channels, entry.out_channels)
        workload = tuned.task_module(relax_model.mod, self.device)
        record = self.store.best(workload)
        sch = None
        if record is None:
            sch = tuned.transplant(workload, self._anchor_trace(entry.family), self.device)
            record = self.store.record_for(workload, sch)
        lib = tuned.build_with(relax_model.mod, record, self.device)
        # a session keeps earlier libraries loaded: overwriting one by name crashes the server (SIGBUS)
        stem = "entry_" + hashlib.sha256(entry.key.encode()).hexdigest()[:16]
        path = toolchain.export(lib, folder, self.device, stem=stem)
        inputs = np.random.default_rng(0).standard_normal(relax_model.input_shape).astype("float32")
        with torch.no_grad():
            expected = module(torch.from_numpy(inputs)).numpy()
        return _Built(path, inputs, expected, workload, sch)


class _EntryMeasurer:
    """Builds and measures planned entries from a shared queue, one worker thread per RPC session."""

    def __init__(
        self,
        device: DeviceProfile,
        table: LatencyTable,
        builder: EntryBuilder,
        number: int,
        repeat: int,
        on_entry: Callable[[], None],
        exclusive: bool,
    ) -> None:
        self.device = device
        self.table = table
        self.builder = builder
        self.number = number
        self.repeat = repeat
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
            return rpc.request_session(self.device, timeout=10.0)
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
                    timing, output = measure.run_remote(
                        session, built.library, built.inputs, self.number, self.repeat, MIN_REPEAT_MS
                    )
            except Exception as exc:  # noqa: BLE001 - a lost server surfaces as several TVM/socket types
                raise _DeviceLost(f"{type(exc).__name__}: {exc}") from exc
        scale = 1e-3 * (1.0 + float(np.abs(built.expected).max()))
        if output.shape != built.expected.shape or not np.allclose(output, built.expected, rtol=1e-3, atol=scale):
            raise EdgepruneError("the compiled kernel's output differs from PyTorch's")
        self._store(entry, built, timing)

    def _store(self, entry: PlannedEntry, built: _Built, timing: measure.Timing) -> None:
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


def _sessions(device: DeviceProfile, parallel: bool) -> list[Any]:
    """One session per server registered under the device's key (just one unless `parallel`).

    Servers still finishing a previous session show as busy for a moment, so each is waited for briefly.
    """
    sessions = [rpc.request_session(device)]
    if parallel:
        counts = rpc.server_counts(rpc.tracker_summary(device.tracker_host, device.tracker_port))
        servers = counts.get(device.key, {})
        for _ in range(servers.get("free", 0) + servers.get("busy", 0) - 1):
            try:
                sessions.append(rpc.request_session(device, timeout=5.0))
            except EdgepruneError:
                break
    return sessions


def measure_entries(
    device: DeviceProfile,
    table: LatencyTable,
    entries: list[PlannedEntry],
    anchor_of: dict[str, PlannedEntry],
    number: int = NUMBER,
    repeat: int = REPEAT,
    parallel: bool = False,
    on_entry: Callable[[], None] | None = None,
    exclusive: bool | None = None,
) -> int:
    """Measure `entries` into `table` (saved after each); returns how many servers were used.

    `anchor_of[family key]` names the tuned shape whose schedule narrower shapes reuse. `exclusive`
    (default: for the local device) keeps builds in this process from overlapping measurements, because
    the servers run on this machine's cores; boards measure while the next entry builds. Raises
    EdgepruneError when the servers are lost or entries fail; what was measured stays in the table.
    """
    if not entries:
        return 0
    exclusive = device.is_local if exclusive is None else exclusive
    with tuned.ScheduleStore.open(device) as store:
        builder = EntryBuilder(device, store, anchor_of)
        measurer = _EntryMeasurer(device, table, builder, number, repeat, on_entry or (lambda: None), exclusive)
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


def time_libraries(
    session: Any, items: list[tuple[str, Path, np.ndarray]], rounds: int, number: int, repeat: int
) -> dict[str, list[list[float]]]:
    """Time several libraries on one session in alternation, `rounds` times over; per library, the ms samples
    of each round. A slow change in the device's load then affects all of them alike. Each library is
    uploaded once (a second upload under the same name would crash the server; see EntryBuilder)."""
    import tvm
    from tvm import relax

    dev = session.cpu(0)
    loaded = {}
    for name, path, inputs in items:
        vm = relax.VirtualMachine(measure.load_remote(session, path), dev)
        data = tvm.runtime.tensor(np.ascontiguousarray(inputs, dtype="float32"), dev)
        vm["main"](data)  # warm-up
        timer = vm.time_evaluator("main", dev, number=number, repeat=repeat, min_repeat_ms=MIN_REPEAT_MS)
        loaded[name] = (timer, data)
    samples: dict[str, list[list[float]]] = {name: [] for name in loaded}
    for _ in range(rounds):
        for name, (timer, data) in loaded.items():
            samples[name].append([float(x) * 1e3 for x in timer(data).results])
    return samples


def calibrate(
    bundle: ModelBundle,
    device: DeviceProfile,
    layers: list[Layer],
    relax_model: Any,
    builder: EntryBuilder,
    number: int = NUMBER,
    repeat: int = REPEAT,
) -> dict[str, Any]:
    """The unpruned network and its layers' kernels measured in alternation on one session. The ratio
    network / sum of its layers is what the latency model applies (see `latency`); the constant offset
    network - sum is kept for comparison."""
    unique = {layer.key: PlannedEntry(layer.family, layer.in_channels, layer.out_channels) for layer in layers}
    with tempfile.TemporaryDirectory(prefix="edgeprune-calibrate-") as folder:
        network = toolchain.export(tune.build(relax_model.mod, device), Path(folder), device, stem="network")
        items = [("network", network, bundle.example_input().numpy())]
        for key, entry in unique.items():
            built = builder.build(entry, Path(folder))
            items.append((key, built.library, built.inputs))
        try:
            rounds = time_libraries(rpc.request_session(device), items, CALIBRATION_ROUNDS, number, repeat)
        except EdgepruneError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost server surfaces as several TVM/socket types
            raise EdgepruneError(
                f"measuring the whole network on device '{device.name}' failed: {type(exc).__name__}: {exc}",
                hint="check the device (`edgeprune devices check`), then run the same command again to resume",
            ) from exc
    per_round = [
        {
            "network_ms": statistics.median(rounds["network"][r]),
            "layer_sum_ms": sum(statistics.median(rounds[layer.key][r]) for layer in layers),
        }
        for r in range(CALIBRATION_ROUNDS)
    ]
    measured = measure.Timing.from_samples(sum(rounds["network"], []), number)
    return {
        "model": bundle.name,
        "input_shape": list(bundle.input_shape),
        "channels": {layer.name: [layer.in_channels, layer.out_channels] for layer in layers},
        "measured_ms": round(measured.median_ms, 6),
        "spread_ms": round(measured.spread_ms, 6),
        "layer_sum_ms": round(statistics.median(r["layer_sum_ms"] for r in per_round), 6),
        # per round, so a change of load between rounds cancels; the median over rounds drops an outlier
        "offset_ms": round(statistics.median(r["network_ms"] - r["layer_sum_ms"] for r in per_round), 6),
        "ratio": round(statistics.median(r["network_ms"] / r["layer_sum_ms"] for r in per_round), 6),
        "rounds": [{k: round(v, 6) for k, v in r.items()} for r in per_round],
        "measured_at": now(),
    }


def measure_network(
    bundle: ModelBundle,
    device: DeviceProfile,
    trials: int = TRIALS,
    number: int = NUMBER,
    repeat: int = REPEAT,
    relax_model: Any = None,
) -> tuple[measure.Timing, tune.TuneReport]:
    """The network compiled as `compile` compiles it by default (tuning only tasks the device's database
    lacks, `trials` each), then measured on the device; also what the tuning did."""
    from edgeprune.compile.export import to_relax

    with ensure_farm(device):
        relax_model = relax_model or to_relax(bundle.module, (1, *bundle.input_shape))
        tuning = tune.tune(relax_model.mod, device, trials)
        lib = tune.build(relax_model.mod, device)
        with tempfile.TemporaryDirectory(prefix="edgeprune-net-") as folder:
            path = toolchain.export(lib, Path(folder), device, stem="network")
            timing, _ = measure.measure_library(
                device, path, bundle.example_input().numpy(), number, repeat, MIN_REPEAT_MS
            )
    return timing, tuning


def profile_model(
    bundle: ModelBundle,
    device: DeviceProfile,
    grid: int | None = None,
    repeat: int = REPEAT,
    number: int = NUMBER,
    parallel: bool = False,
    trials: int = TRIALS,
    on_progress: Progress | None = None,
) -> ProfileReport:
    """Measure the table entries `bundle` needs on `device` (resuming; reusing entries already there).

    For `local`, a farm is started for the duration when none runs. Raises EdgepruneError when the device
    is lost before the table is complete; everything measured up to then is saved, and running again
    measures only what is missing.
    """
    from edgeprune.compile.export import to_relax

    for name, value in (("--repeat", repeat), ("--number", number), ("--trials", trials)):
        if value < 1:
            raise EdgepruneError(f"{name} must be at least 1, got {value}")
    if grid is not None and grid < 1:
        raise EdgepruneError(f"--grid must be a positive channel step, got {grid}")
    progress = on_progress or (lambda phase, done, total: None)
    start = time.perf_counter()
    layers, structure = LayerExtractor().extract(bundle.module, bundle.input_shape)
    if not layers:
        raise EdgepruneError(
            f"model '{bundle.name}' has no prunable layer (Conv2d or Linear)", hint="nothing to profile or prune"
        )
    planned = plan(layers, device.vector_lanes, grid)
    with exclusive(device):
        table = LatencyTable.open(device)
        missing = [e for k, e in planned.items() if k not in table.entries]
        network = table.networks.get(structure)
        report = ProfileReport(
            table.path,
            entries_measured=0,
            entries_reused=len(planned) - len(missing),
            entries_total=len(planned),
            seconds=0.0,
            servers=0,
            network_ms=float(network["measured_ms"]) if network else None,
        )
        if missing or network is None:
            with ensure_farm(device, servers=2 if parallel else 1):
                rpc.request_session(device)  # fail fast, before minutes of export and tuning
                relax_model = to_relax(bundle.module, (1, *bundle.input_shape))
                phase_start = time.perf_counter()
                report.tuning = tune.tune(
                    relax_model.mod, device, trials, on_progress=lambda n, total, _b: progress("tuning", n, total)
                )
                report.phase_seconds["tuning"] = time.perf_counter() - phase_start
                if network is None:
                    progress("network", 0, 1)
                    phase_start = time.perf_counter()
                    with tuned.ScheduleStore.open(device) as store:
                        builder = EntryBuilder(device, store, anchors(layers))
                        record = calibrate(bundle, device, layers, relax_model, builder, number, repeat)
                    table.networks[structure] = record
                    table.save()
                    report.network_ms = table.networks[structure]["measured_ms"]
                    report.phase_seconds["network"] = time.perf_counter() - phase_start
                    progress("network", 1, 1)
                done = [0]

                def advance() -> None:
                    done[0] += 1
                    report.entries_measured = done[0]
                    progress("entries", done[0], len(missing))

                progress("entries", 0, len(missing))
                phase_start = time.perf_counter()
                report.servers = measure_entries(
                    device, table, missing, anchors(layers), number, repeat, parallel, advance
                )
                report.phase_seconds["entries"] = time.perf_counter() - phase_start
    report.seconds = time.perf_counter() - start
    return report
