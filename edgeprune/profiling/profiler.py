"""Profile a model on a device: the table entries it needs, measured through TVM RPC (`edgeprune profile`).

Phases: (1) tune the full-width network with MetaSchedule on the device (only tasks the shared database
lacks): these records are the family anchors whose schedules narrower shapes reuse; (2) measure every
missing grid entry over the farm's servers (see `entries`); (3) calibrate: the unpruned network, built as
`compile` builds it, measured before and after the entries. The table is saved after each entry: an
interrupted run resumes, and entries measured for other models are reused.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.devices import health
from edgeprune.devices.base import Device, TimingSettings
from edgeprune.devices.timing import Timing, measure_library
from edgeprune.devices.tuning import TuningConfig
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import ModelBundle
from edgeprune.profiling.calibration import network_record, network_samples
from edgeprune.profiling.entries import measure_entries
from edgeprune.profiling.grid import PlannedEntry, anchors, plan
from edgeprune.profiling.lut import LatencyTable, exclusive
from edgeprune.profiling.signature import LayerExtractor
from edgeprune.profiling.watch import Progress, measure_watched, settle
from edgeprune.tvmx import tune


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
    health_warnings: list[str] = field(default_factory=list)  # what the board's health said of this session

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
            "health_warnings": self.health_warnings,
        }


def measure_network(
    bundle: ModelBundle,
    device: Device,
    trials: int | None = None,
    settings: TimingSettings | None = None,
    relax_model: Any = None,
) -> tuple[Timing, tune.TuneReport]:
    """The network compiled as `compile` compiles it by default (the device's `[tuning]`, `trials` per new
    task where given), then measured on the device; also what the tuning did."""
    from edgeprune.tvmx.export import to_relax

    with device.serving():
        relax_model = relax_model or to_relax(
            bundle.module, (1, *bundle.input_shape), device.tuning.conv_layout(device.target, device.channel_step)
        )
        tuning = tune.tune(relax_model.mod, device, trials)  # None: the device's compile budget
        lib = tune.build(relax_model.mod, device)
        with tempfile.TemporaryDirectory(prefix="edgeprune-net-") as folder:
            path = device.export(lib, Path(folder), stem="network")
            timing, _ = measure_library(device, path, bundle.example_input().numpy(), settings)
    return timing, tuning


def profile_model(
    bundle: ModelBundle,
    device: Device,
    grid: int | None = None,
    settings: TimingSettings | None = None,
    parallel: bool = False,
    trials: int | None = None,
    on_progress: Progress | None = None,
    tuning: TuningConfig | None = None,
    cool: health.CoolDown | None = None,
) -> ProfileReport:
    """Measure the table entries `bundle` needs on `device` (resuming; reusing entries already there).

    The full-width network is tuned with `tuning` (default: the device's `[tuning]`) at its profile budget
    (`profile_trials`, or `trials` per task where given): these are the records later compiles reuse and
    transplant, so this is where a large budget pays. For `local`, a farm is started for the duration when
    none runs. Raises EdgepruneError when the device is lost before the table is complete; everything
    measured up to then is saved, and running again measures only what is missing. The board's health is read
    before tuning and around every few entries: see `watch` (`cool`: how long it waits for a throttled board).
    """
    from edgeprune.tvmx.export import to_relax

    if trials is not None and trials < 1:
        raise EdgepruneError(f"--trials must be at least 1, got {trials}")
    config = (tuning or device.tuning).for_profile().with_changes(trials=trials)
    settings = settings or device.timing
    if grid is not None and grid < 1:
        raise EdgepruneError(f"--grid must be a positive channel step, got {grid}")
    progress = on_progress or (lambda phase, done, total: None)
    start = time.perf_counter()
    layers, structure = LayerExtractor().extract(bundle.module, bundle.input_shape)
    if not layers:
        raise EdgepruneError(
            f"model '{bundle.name}' has no prunable layer (Conv2d or Linear)", hint="nothing to profile or prune"
        )
    planned = plan(layers, device.channel_step, grid)
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
            session: dict[str, Any] = {}  # this session's health record, kept in the table, as it grows
            before = session["before"] = settle(device, table, cool or health.CoolDown(), session, progress)
            with device.serving(2 if parallel else 1):
                device.request_session()  # fail fast, before minutes of export and tuning
                relax_model = to_relax(
                    bundle.module, (1, *bundle.input_shape), config.conv_layout(device.target, device.channel_step)
                )
                phase_start = time.perf_counter()
                tuned = report.tuning = tune.tune(
                    relax_model.mod,
                    device,
                    on_progress=lambda n, total, _b: progress("tuning", n, total),
                    config=config,
                )
                report.phase_seconds["tuning"] = time.perf_counter() - phase_start
                calibration: list[float] = []
                if network is None:
                    progress("network", 0, 2)
                    calibration += network_samples(bundle, device, relax_model, settings)
                    progress("network", 1, 2)
                anchor_seconds = [0.0]

                def anchor_tuned(anchor: tune.TuneReport) -> None:
                    """A family's other kernel kind, tuned on its own: counted as tuning, not as entries."""
                    tuned.trials += anchor.trials
                    tuned.seconds += anchor.seconds
                    anchor_seconds[0] += anchor.seconds

                layout = config.conv_layout(device.target, device.channel_step)
                family_anchors = anchors(layers, list(planned.values()), layout)

                def chunk(entries: list[PlannedEntry], on_entry: Callable[[], None]) -> int:
                    return measure_entries(
                        device,
                        table,
                        entries,
                        family_anchors,
                        settings,
                        parallel,
                        on_entry,
                        tuning=config,
                        on_anchor_tuned=anchor_tuned,
                    )

                phase_start = time.perf_counter()
                report.servers = measure_watched(device, table, missing, chunk, progress, cool, session)
                report.entries_measured = len(missing)
                report.phase_seconds["entries"] = time.perf_counter() - phase_start - anchor_seconds[0]
                report.phase_seconds["tuning"] += anchor_seconds[0]
                if network is None:
                    calibration += network_samples(bundle, device, relax_model, settings)
                    table.networks[structure] = network_record(bundle, layers, calibration, settings.number)
                    table.save()
                    report.network_ms = table.networks[structure]["measured_ms"]
                    progress("network", 2, 2)
            session |= {**health.record(before, device.health()), "entries_measured": report.entries_measured}
            table.health.append(session)
            table.save()
            report.health_warnings = table.health[-1]["warnings"]
    report.seconds = time.perf_counter() - start
    return report
