"""`profile` acting on the board's health (fast tier): the entries are measured in chunks with the health read on
either side; a chunk during which the board throttled or its clock moved is discarded, the board cools down, the
chunk is measured again, and a board that does not calm down is refused with the fix. The health is read by the
local device's real reader, pointed at a fake sysfs tree that the test changes between readings; the measurement
itself is a stand-in that writes entries (the real one, on the loopback board, is in test_health_board)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from torch import nn

from edgeprune.devices import health
from edgeprune.devices.profile import local_device
from edgeprune.errors import EdgepruneError
from edgeprune.profiling import watch
from edgeprune.profiling.grid import PlannedEntry, plan
from edgeprune.profiling.lut import LatencyTable
from edgeprune.profiling.signature import LayerExtractor
from tests.health_tree import fake_board_tree

QUIET = "0"  # the throttle word of a board that never throttled
THROTTLING = "50005"  # under-voltage and throttled, now and since boot
SHORT = health.CoolDown(seconds=1.0, poll=0.05)


def entries(count: int) -> list[PlannedEntry]:
    """`count` planned entries of a small conv network (more than two health chunks' worth)."""
    module = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.Conv2d(32, 16, 3))
    layers, _ = LayerExtractor().extract(module, (3, 16, 16))
    planned = list(plan(layers, 4, 4).values())
    assert len(planned) >= count
    return planned[:count]


class Board:
    """The fake tree the local device's health reader is pointed at, and the stand-in measurement."""

    def __init__(self, root: Path, table: LatencyTable) -> None:
        self.root = fake_board_tree(root, mhz=(1800, 1800), throttled=QUIET)
        (self.root / health.THERMAL.lstrip("/") / "thermal_zone0/temp").write_text("45000\n")  # cool
        self.governor("performance")  # the clock holds still unless something holds it back
        self.table = table
        self.chunks = 0
        self.on_chunk: Callable[[int], None] = lambda _n: None  # changes the tree during chunk n (1-based)
        self.phases: list[tuple[str, int, int]] = []
        self.on_cooling: Callable[[], None] = lambda: None

    def throttle(self, word: str) -> None:
        (self.root / health.PI_THROTTLED.lstrip("/")).write_text(word + "\n")

    def governor(self, name: str) -> None:
        (self.root / health.CPU.lstrip("/") / "cpu0/cpufreq/scaling_governor").write_text(name + "\n")

    def clock(self, mhz: int) -> None:
        (self.root / health.CPU.lstrip("/") / "cpu0/cpufreq/scaling_cur_freq").write_text(f"{mhz * 1000}\n")

    def measure(self, chunk: list[PlannedEntry], on_entry: Callable[[], None]) -> int:
        self.chunks += 1
        self.on_chunk(self.chunks)
        for entry in chunk:
            self.table.entries[entry.key] = {"median_ms": 0.1, "chunk": self.chunks}
            self.table.save()
            on_entry()
        return 1

    def progress(self, phase: str, done: int, total: int) -> None:
        self.phases.append((phase, done, total))
        if phase == "cooling":
            self.on_cooling()


@pytest.fixture
def board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Board:
    table = LatencyTable(tmp_path / "lut.json", "local", {"kind": "llvm"}, "test")
    made = Board(tmp_path / "sysfs", table)
    monkeypatch.setenv(health.ROOT_ENV, str(made.root))
    return made


def measured(board: Board, todo: list[PlannedEntry], session: dict) -> int:
    return watch.measure_watched(local_device(), board.table, todo, board.measure, board.progress, SHORT, session)


def saved(board: Board) -> dict:
    return json.loads(board.table.path.read_text())


def test_a_quiet_board_is_measured_in_chunks_with_its_health_read_around_each(board: Board) -> None:
    todo = entries(2 * watch.HEALTH_CHUNK + 1)
    session: dict = {}
    assert measured(board, todo, session) == 1
    assert board.chunks == 3 and set(saved(board)["entries"]) == {e.key for e in todo}
    assert "disturbed" not in session and not any(p[0] == "cooling" for p in board.phases)
    assert board.phases[-1] == ("entries", len(todo), len(todo))


def test_a_chunk_measured_while_the_board_throttled_is_measured_again_after_cooling(board: Board) -> None:
    todo = entries(2 * watch.HEALTH_CHUNK)
    board.on_chunk = lambda n: board.throttle(THROTTLING) if n == 2 else None
    board.on_cooling = lambda: board.throttle("50000")  # cooled: the flags of now cleared, "has occurred" stay
    session: dict = {}
    measured(board, todo, session)
    assert board.chunks == 3  # the second chunk twice
    table = saved(board)["entries"]
    second = {e.key for e in todo[watch.HEALTH_CHUNK :]}
    assert set(table) == {e.key for e in todo} and {table[k]["chunk"] for k in second} == {3}
    [record] = session["disturbed"]
    assert record["entries"] == [e.key for e in todo[watch.HEALTH_CHUNK :]] and record["cooled"] is True
    assert "the board throttles: under-voltage now, throttled now (0x50005)" in record["disturbances"]
    cooling = [p for p in board.phases if p[0] == "cooling"]
    assert cooling and cooling[-1][2] == 1  # whole seconds, bounded by the cool-down
    entries_shown = [p[1] for p in board.phases if p[0] == "entries"]
    assert max(entries_shown) == len(todo) and entries_shown[-1] == len(todo)  # the bar never counts past the end


def test_a_clock_that_moves_during_a_chunk_discards_it_too(board: Board) -> None:
    todo = entries(watch.HEALTH_CHUNK)
    board.on_chunk = lambda _n: board.clock(1200)  # moved during the first; held still during the second
    session: dict = {}
    measured(board, todo, session)
    assert board.chunks == 2 and "cpu0 1800 -> 1200 MHz" in session["disturbed"][0]["disturbances"][0]


def test_a_clock_that_moves_again_on_a_board_that_does_not_throttle_is_kept_and_recorded(board: Board) -> None:
    todo = entries(watch.HEALTH_CHUNK)
    board.on_chunk = lambda n: board.clock(1500 if n == 1 else 1000)  # an x86 turbo that moves with the load
    session: dict = {}
    measured(board, todo, session)
    assert board.chunks == 2 and set(saved(board)["entries"]) == {e.key for e in todo}
    first, second = session["disturbed"]
    assert "cooled" in first and second["kept"] and "cpu0 1500 -> 1000 MHz" in second["disturbances"][0]


def test_under_a_scaling_governor_a_moving_clock_is_warned_of_not_measured_again(board: Board) -> None:
    board.governor("ondemand")
    board.on_chunk = lambda n: board.clock(600 * n)
    session: dict = {}
    measured(board, entries(2 * watch.HEALTH_CHUNK), session)
    assert board.chunks == 2 and "disturbed" not in session


def test_a_board_that_stays_throttled_is_refused_with_the_fix_and_nothing_suspect_kept(board: Board) -> None:
    todo = entries(2 * watch.HEALTH_CHUNK)
    board.on_chunk = lambda n: board.throttle(THROTTLING) if n == 2 else None
    session: dict = {"before": health.this_machine()}
    with pytest.raises(EdgepruneError) as refused:
        measured(board, todo, session)
    assert "still throttles after 1 s" in refused.value.message and "governor to performance" in str(refused.value.hint)
    assert board.chunks == 2  # not measured again while it still throttles
    on_disk = saved(board)
    assert set(on_disk["entries"]) == {e.key for e in todo[: watch.HEALTH_CHUNK]}  # the good chunk stays
    assert on_disk["health"][-1]["refused"].startswith("the board throttles")
    assert any("0x50005" in w for w in on_disk["health"][-1]["warnings"])
    # resumable: once the board is quiet, running again measures only what is missing
    board.throttle(QUIET)
    board.on_chunk = lambda _n: None
    rest = [e for e in todo if e.key not in board.table.entries]
    measured(board, rest, {})
    assert set(saved(board)["entries"]) == {e.key for e in todo}


def test_a_board_that_throttles_again_after_cooling_is_refused(board: Board) -> None:
    todo = entries(watch.HEALTH_CHUNK)
    board.on_chunk = lambda _n: board.throttle("4")  # throttled now, in each chunk
    board.on_cooling = lambda: board.throttle("40000")  # cooled: only "throttling has occurred" stays
    with pytest.raises(EdgepruneError, match="again after cooling down"):
        measured(board, todo, {})
    assert board.chunks == 2 and saved(board)["entries"] == {}


def test_a_board_already_throttling_cools_down_before_anything_is_measured(board: Board) -> None:
    todo = entries(watch.HEALTH_CHUNK)
    board.throttle(THROTTLING)
    with pytest.raises(EdgepruneError, match="was not fit to measure .*nothing was measured"):
        measured(board, todo, {})
    assert board.chunks == 0 and saved(board)["entries"] == {}  # the table holds only why it was refused
    assert saved(board)["health"][-1]["disturbed"][0]["cooled"] is False
    board.on_cooling = lambda: board.throttle("50000")
    session: dict = {}
    measured(board, todo, session)
    assert board.chunks == 1 and session["disturbed"][0]["entries"] == [] and session["disturbed"][0]["cooled"]
    assert set(saved(board)["entries"]) == {e.key for e in todo}


def test_a_board_only_hot_is_measured_at_once_and_warned_of(board: Board) -> None:
    (board.root / health.THERMAL.lstrip("/") / "thermal_zone0/temp").write_text("82150\n")  # a hot x86 host
    session: dict = {}
    measured(board, entries(watch.HEALTH_CHUNK), session)
    assert board.chunks == 1 and "disturbed" not in session and not any(p[0] == "cooling" for p in board.phases)
    assert any("82 °C" in w for w in health.warnings(health.this_machine()))
