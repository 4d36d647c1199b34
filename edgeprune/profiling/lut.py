"""The latency lookup table of a device: `<profiles folder>/<device>/lut.json` (`edgeprune devices` shows the folder).

One JSON file: a header (schema version, device, TVM target, TVM version, what the kernels are), the entries
(one per signature: family + in/out channels, with median, spread and time of measurement) and the
whole-network measurements used to calibrate per-layer sums. It is rewritten atomically after every entry,
so an interrupted profile keeps everything it measured and the next run only measures what is missing.
A table made for another target or TVM version is refused: its numbers describe other kernels.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeprune import atomic
from edgeprune.devices.base import Device
from edgeprune.errors import EdgepruneError

_log = logging.getLogger(__name__)  # the line a waiting profile prints (Python's last-resort handler: stderr)
SCHEMA_VERSION = 2
HEALTH_KEPT = 20  # profiling sessions whose board health a table keeps (the newest)
FILE_NAME = "lut.json"
KERNELS = (
    "MetaSchedule-tuned kernels as `compile` ships them: each entry runs the schedule the device's tuning "
    "database holds for that exact shape; a shape without a record gets the tuned schedule of its layer "
    "family's full-width layer re-applied (tile sizes adapted), and that record is committed to the database"
)


def tvm_version() -> str:
    """The installed TVM's version, without importing TVM (which takes seconds)."""
    from importlib import metadata

    for dist in ("apache-tvm", "tvm"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
    import tvm

    return str(tvm.__version__)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def lut_path(device: Device) -> Path:
    return device.lut_dir / FILE_NAME


def split_key(key: str) -> tuple[str, int, int]:
    """'<family key>|<in>x<out>' -> (family key, in, out)."""
    family, _, channels = key.rpartition("|")
    cin, _, cout = channels.partition("x")
    return family, int(cin), int(cout)


def remeasure_hint(path: Path, device: str) -> str:
    """What to do about a table that cannot be used."""
    return f"move {path} away and run `edgeprune profile MODEL --device {device}` to measure a new one"


def _positive_ms(value: Any, what: str) -> None:
    """A time the model divides by and sums: NaN, infinite, zero or negative would poison every prediction."""
    ms = float(value)
    if not (math.isfinite(ms) and ms > 0):
        raise ValueError(f"{what}: {value!r} ms is not a positive time")


@dataclass
class LatencyTable:
    """The table in memory. `entries` and `networks` are plain JSON records keyed as in the file."""

    path: Path
    device: str
    target: dict[str, Any]
    tvm_version: str
    created: str = field(default_factory=now)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    emulated: bool = False  # measured on an emulator: says nothing about a board's speed
    # the board's health before and after each profiling session that measured here, last HEALTH_KEPT of them
    health: list[dict[str, Any]] = field(default_factory=list)
    layout: str = "NCHW"  # the device's tuning.layout: its kernels are the ones measured (tables before it: NCHW)

    @classmethod
    def new(cls, device: Device) -> LatencyTable:
        return cls(
            lut_path(device),
            device.name,
            dict(device.target),
            tvm_version(),
            emulated=not device.timings_are_real,
            layout=device.tuning.conv_layout(device.target, device.channel_step),
        )

    @classmethod
    def load(cls, device: Device) -> LatencyTable | None:
        """The device's table, validated against the device; None when it has none yet."""
        path = lut_path(device)
        if not path.exists():
            return None
        rerun = remeasure_hint(path, device.name)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EdgepruneError(f"latency table {path} is unreadable or corrupt: {exc}", hint=rerun) from exc
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
            found = data.get("schema") if isinstance(data, dict) else None
            raise EdgepruneError(
                f"latency table {path} has schema version {found}, this edgeprune reads {SCHEMA_VERSION}", hint=rerun
            )
        if data.get("device") != device.name or data.get("target") != device.target:
            raise EdgepruneError(
                f"latency table {path} was measured for device '{data.get('device')}' with target "
                f"{json.dumps(data.get('target'))}; device '{device.name}' has target {json.dumps(device.target)}",
                hint=rerun,
            )
        if bool(data.get("emulated", False)) != (not device.timings_are_real):
            raise EdgepruneError(
                f"latency table {path} holds {'emulated' if data.get('emulated') else 'real'} timings; device "
                f"'{device.name}' is {'emulated' if not device.timings_are_real else 'a real board'}",
                hint=rerun,
            )
        if data.get("tvm_version") != tvm_version():
            raise EdgepruneError(
                f"latency table {path} was measured with TVM {data.get('tvm_version')}, this is TVM {tvm_version()}: "
                "its kernels differ",
                hint=rerun,
            )
        layout = device.tuning.conv_layout(device.target, device.channel_step)
        if data.get("layout", "NCHW") != layout:
            raise EdgepruneError(
                f"latency table {path} measured {data.get('layout', 'NCHW')} kernels; device '{device.name}' now "
                f"compiles with layout {layout} (tuning.layout = {device.tuning.layout!r}): its kernels differ",
                hint=rerun,
            )
        try:
            table = cls(
                path=path,
                device=str(data["device"]),
                target=dict(data["target"]),
                tvm_version=str(data["tvm_version"]),
                created=str(data.get("created", "")),
                entries={str(k): dict(v) for k, v in data["entries"].items()},
                networks={str(k): dict(v) for k, v in data["networks"].items()},
                emulated=bool(data.get("emulated", False)),
                health=list(data.get("health", [])),
                layout=str(data.get("layout", "NCHW")),
            )
            for key, entry in table.entries.items():
                split_key(key)
                _positive_ms(entry["median_ms"], f"entry {key}")
            for name, network in table.networks.items():
                _positive_ms(network["measured_ms"], f"network {name}")
                for layer, (cin, cout) in dict(network["channels"]).items():
                    if not (isinstance(cin, int) and isinstance(cout, int) and cin > 0 and cout > 0):
                        raise ValueError(f"network {name}: layer {layer} has channels {cin}, {cout}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EdgepruneError(f"latency table {path} is malformed: {type(exc).__name__}: {exc}", hint=rerun) from exc
        return table

    @classmethod
    def open(cls, device: Device) -> LatencyTable:
        return cls.load(device) or cls.new(device)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "device": self.device,
            "target": self.target,
            "tvm_version": self.tvm_version,
            "kernels": KERNELS,
            "emulated": self.emulated,
            "layout": self.layout,
            "created": self.created,
            "updated": now(),
            "entries": dict(sorted(self.entries.items())),
            "networks": self.networks,
            "health": self.health[-HEALTH_KEPT:],
        }

    def save(self) -> None:
        """Write the table, keeping what the file holds that this one lacks (another process's entries): a
        writer that did not reread it, or one without the lock, loses nothing of another's."""
        self._merge_from_disk()
        atomic.write_json(self.path, self.to_json())

    def _merge_from_disk(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # no table yet, or one `load` refuses: this one replaces it
        own = {"schema": SCHEMA_VERSION, "device": self.device, "target": self.target,
               "tvm_version": self.tvm_version, "emulated": self.emulated}  # fmt: skip
        if not isinstance(data, dict) or any(data.get(key, False) != value for key, value in own.items()):
            return  # another device's or TVM's numbers: never mixed in
        for mine, theirs in ((self.entries, data.get("entries")), (self.networks, data.get("networks"))):
            if isinstance(theirs, dict):
                for key, record in theirs.items():
                    if isinstance(record, dict):
                        mine.setdefault(str(key), dict(record))

    def discard(self, keys: list[str]) -> None:
        """Remove entries and rewrite the file without them (entries measured while the board throttled). Only
        under `exclusive`: the file is written as this table holds it, without `save`'s merge, which would bring
        them back; under the lock no other writer can have added any since the table was opened."""
        for key in keys:
            self.entries.pop(key, None)
        atomic.write_json(self.path, self.to_json())

    def median_ms(self, key: str) -> float | None:
        entry = self.entries.get(key)
        return None if entry is None else float(entry["median_ms"])


def _lock(device: Device) -> Path:
    return lut_path(device).with_name(FILE_NAME + ".lock")


def writer(device: Device) -> str | None:
    """Who is writing the device's table now ('pid N (`command`) since TIME'), None when nobody is."""
    return atomic.lock_holder(_lock(device))


def busy_error(device: Device, holder: str | None) -> EdgepruneError:
    """The table is being written by another process and this one will not wait (`--no-wait`)."""
    return EdgepruneError(
        f"another `edgeprune profile` is writing {lut_path(device)}: {holder or 'another process'}",
        hint="wait for it to finish (without --no-wait, a command waits its turn; it then measures only "
        "what the table still lacks)",
    )


@contextlib.contextmanager
def exclusive(device: Device, wait: bool = True) -> Iterator[None]:
    """One profiling run per table at a time: a second one waits its turn (saying for whom), then reads the
    table the first one left and measures only what is still missing; with `wait=False` it fails at once."""
    path = lut_path(device)

    def waiting(holder: str) -> None:
        _log.warning("waiting for %s, which is writing %s", holder, path)

    with atomic.sole_writer(_lock(device), busy_error(device, None), waiting if wait else None):
        yield
