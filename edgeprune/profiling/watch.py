"""`profile` acting on the board's health: the entries are measured a few at a time with the health read on
either side, and what was measured while the board throttled, or while its clock or governor moved, is measured
again after a cool-down, or the profile is refused with the fix.

A table profiled while the board throttled is wrong for the rest of its life, and nothing in its numbers says so;
a user whose Pi throttled during `profile` would otherwise never be told. What counts as a disturbance is the
device layer's (`devices.health`); what to do about it, here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edgeprune.devices import health
from edgeprune.devices.base import Device
from edgeprune.errors import EdgepruneError
from edgeprune.profiling.grid import PlannedEntry
from edgeprune.profiling.lut import LatencyTable

Progress = Callable[[str, int, int], None]  # (phase, done, total): "tuning", "network", "entries", "cooling" (s)
MeasureChunk = Callable[[list[PlannedEntry], Callable[[], None]], int]  # (entries, on_entry) -> servers used
HEALTH_CHUNK = 8  # entries measured between two readings of the board's health
_log = logging.getLogger(__name__)  # a disturbed board's warning (Python's last-resort handler: stderr)


def measure_watched(
    device: Device,
    table: LatencyTable,
    missing: list[PlannedEntry],
    measure: MeasureChunk,
    progress: Progress,
    cool: health.CoolDown | None = None,
    session: dict[str, Any] | None = None,
) -> int:
    """`measure` the entries HEALTH_CHUNK at a time, reading the board's health before and after each chunk:
    a table profiled while the board throttled is wrong for the rest of its life, and nothing in its numbers
    says so. When the readings around a chunk show `health.disturbances` (throttling; a governor, or the clock
    of a core that a fixed governor holds, that moved), its entries are discarded from the table, the board gets
    up to `cool.seconds` to calm down (progress phase "cooling", in seconds), and the chunk is measured again; a
    board that throttles before the first chunk gets the same wait first. A board that still
    throttles after the wait, or throttles again, is refused: EdgepruneError with the fix, the disturbed entries
    not in the table (running again measures them) and what happened recorded in `session["disturbed"]` (kept
    in the table's health); a clock that moved again on a board that does not throttle is kept and recorded
    (`_keep_moved`). Returns the servers used."""
    cool = cool or health.CoolDown()
    session = {} if session is None else session
    done = [0]

    def advance() -> None:
        done[0] += 1
        progress("entries", done[0], len(missing))

    progress("entries", 0, len(missing))
    if not missing:
        return 0
    servers = 0
    before = settle(device, table, cool, session, progress)
    for start in range(0, len(missing), HEALTH_CHUNK):
        entries = missing[start : start + HEALTH_CHUNK]
        for attempt in (1, 2):
            servers = max(servers, measure(entries, advance))
            after = device.health()
            said = health.disturbances(before, after)
            if not said:
                break
            if attempt == 2 and not health.throttled_during(before, after):
                _keep_moved(entries, said, session)
                break
            before = _set_aside(device, table, entries, (after, said), attempt, cool, session, progress)
            done[0] -= len(entries)
            progress("entries", done[0], len(missing))
        before = after
    return servers


def _keep_moved(entries: list[PlannedEntry], said: list[str], session: dict[str, Any]) -> None:
    """A chunk whose clock or governor moved again after a cool-down, on a board that does not throttle: kept
    (the clock of an x86 host's turbo moves with what else runs, and refusing would stop every profile there),
    warned of and recorded, so the table says which entries it concerns."""
    _log.warning("board health: %s, again; the %d entries are kept and this is recorded", "; ".join(said), len(entries))
    record = {"entries": [e.key for e in entries], "disturbances": said, "attempt": 2, "kept": True}
    session.setdefault("disturbed", []).append(record)


def settle(
    device: Device, table: LatencyTable, cool: health.CoolDown, session: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """The board's health now; when it throttles, first the cool-down (what it measured now would only be
    discarded), refused as `measure_watched` refuses when it still throttles. A board that is only hot starts
    (with the warning): an x86 host may idle above a Pi's limit at full clock."""
    before = device.health()
    if health.throttles(before) is None:
        return before
    return _set_aside(device, table, [], (before, health.unsettled(before)), 1, cool, session, progress)


def _set_aside(
    device: Device,
    table: LatencyTable,
    entries: list[PlannedEntry],
    disturbed: tuple[dict[str, Any], list[str]],
    attempt: int,
    cool: health.CoolDown,
    session: dict[str, Any],
    progress: Progress,
) -> dict[str, Any]:
    """Discard the entries a disturbed chunk measured (none: the board was not calm before the first), say so,
    and wait for the board to cool down; returns the reading to measure again from, or refuses (after recording
    why in the table) when it is the second time or the board still throttles. `disturbed`: the reading after
    the chunk and what it said."""
    after, said = disturbed
    if entries:
        table.discard([e.key for e in entries])
    discarded = f"; the {len(entries)} entries measured meanwhile are discarded" if entries else ""
    _log.warning("board health: %s%s", "; ".join(said), discarded)
    record: dict[str, Any] = {"entries": [e.key for e in entries], "disturbances": said, "attempt": attempt}
    session.setdefault("disturbed", []).append(record)
    calmed = None
    if attempt == 1:
        _log.warning("cooling down for up to %.0f s before measuring%s", cool.seconds, " them again" * bool(entries))
        calmed = health.cool_down(device.health, cool, lambda elapsed, total: progress("cooling", elapsed, total))
        record["cooled"] = health.calm(calmed)
        if health.throttles(calmed) is None:  # still hot but not held back: measured, and warned of
            return calmed
    last = calmed or after
    session |= {**health.record(session.get("before", after), last), "refused": "; ".join(said)}
    table.health.append(session)
    table.save()
    why = "again after cooling down" if attempt == 2 else f"and still throttles after {cool.seconds:.0f} s"
    what = f"was disturbed while {len(entries)} entries were measured" if entries else "was not fit to measure"
    lost = "they were discarded" if entries else "nothing was measured"
    raise EdgepruneError(
        f"the board {what} ({'; '.join(said)}) {why}: {lost}; {len(table.entries)} entries are saved in {table.path}",
        hint="keep the board's clock fixed and cool: set the governor to performance (`sudo cpupower "
        "frequency-set -g performance`; on a Jetson `sudo nvpmodel -m 0 && sudo jetson_clocks`), give it a "
        "heatsink or fan and a steady power supply (under-voltage throttles too), then run the same command "
        "again: it measures only what is missing",
    )
