"""Board health readers (fast tier): a fake sysfs tree of a hot, throttled Pi on `ondemand`, the command
fallbacks (vcgencmd, nvpmodel), the same reads sent as shell commands, and the real reader on this machine's own
sysfs, where whatever is absent is unknown, not an error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edgeprune.devices import health
from tests.health_tree import fake_board_tree


def no_commands(argv: list[str]) -> str | None:
    return None


def test_a_fake_pi_tree_is_read_and_every_problem_warned_of(tmp_path: Path) -> None:
    source = health.FileTree(fake_board_tree(tmp_path), no_commands)
    state = health.read_health(source, "fake")
    assert state["cores"] == [
        {"cpu": 0, "governor": "ondemand", "mhz": 1500.0, "max_mhz": 1800.0},
        {"cpu": 1, "governor": "performance", "mhz": 1800.0, "max_mhz": 1800.0},
    ]
    assert state["temperatures_c"] == {"thermal_zone0 (cpu-thermal)": pytest.approx(82.15)}
    assert state["throttled"] == {
        "raw": "0x50005",
        "flags": ["under-voltage now", "throttled now", "under-voltage has occurred", "throttling has occurred"],
    }
    assert state["accelerator_mhz"] == {"17000000.gpu": pytest.approx(921.6)} and state["power_mode"] is None
    said = health.warnings(state)
    assert len(said) == 3 and "ondemand" in said[0] and "0x50005" in said[1] and "82 °C" in said[2]
    line = health.summary_line(state)
    assert "governor ondemand/performance on 2 core(s)" in line and "throttled now" in line
    # the clock moved between the readings around a measurement
    later = health.read_health(health.FileTree(fake_board_tree(tmp_path / "later", (1200, 1800)), no_commands), "x")
    assert any("cpu0 1500 -> 1200 MHz" in w for w in health.warnings(state, later))
    assert json.loads(json.dumps(health.record(state, later)))["warnings"] == health.warnings(state, later)


def test_a_quiet_board_has_no_warnings(tmp_path: Path) -> None:
    root = fake_board_tree(tmp_path, throttled="0")
    (root / health.CPU.lstrip("/") / "cpu0/cpufreq/scaling_governor").write_text("performance\n")
    (root / health.THERMAL.lstrip("/") / "thermal_zone0/temp").write_text("45000\n")
    state = health.read_health(health.FileTree(root, no_commands), "fake")
    assert state["throttled"] == {"raw": "0x0", "flags": []} and health.warnings(state, state) == []
    assert "throttle flags none (0x0)" in health.summary_line(state)


def test_commands_fill_in_where_the_files_are_absent(tmp_path: Path) -> None:
    answers = {"vcgencmd get_throttled": "throttled=0x20000\n", "nvpmodel -q": "NV Power Mode: MAXN\n0\n"}
    state = health.read_health(health.FileTree(tmp_path, lambda argv: answers.get(" ".join(argv))), "fake")
    assert state["throttled"] == {"raw": "0x20000", "flags": ["ARM frequency capping has occurred"]}
    assert state["power_mode"] == "MAXN" and state["cores"] == [] and state["temperatures_c"] == {}
    assert "power mode MAXN" in health.summary_line(state)


def test_the_same_reads_as_shell_commands(tmp_path: Path) -> None:
    """How a board is read over SSH: every read in one shell command (here run by this machine's sh)."""
    commands: list[str] = []

    def sh(command: str) -> str | None:
        commands.append(command)
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 else None

    over = health.read_health(health.Captured.over(sh, str(fake_board_tree(tmp_path / "a b"))), "sh")
    assert len(commands) == 1
    direct = health.read_health(health.FileTree(tmp_path / "a b", no_commands), "fake")
    assert {k: over[k] for k in ("cores", "temperatures_c", "throttled")} == {
        k: direct[k] for k in ("cores", "temperatures_c", "throttled")
    }


def test_the_real_reader_on_this_machines_sysfs() -> None:
    """Whatever this machine has: every core listed where the kernel lists them, absent files unknown (None)."""
    state = health.this_machine()
    assert json.loads(json.dumps(state)) == state and state["read_from"] == "this machine"
    online = Path("/sys/devices/system/cpu/online")
    if online.exists():
        assert len(state["cores"]) >= 1
    for core in state["cores"]:
        assert core["governor"] is None or isinstance(core["governor"], str)
        assert core["mhz"] is None or core["mhz"] > 0
    assert all(-40 < c < 150 for c in state["temperatures_c"].values())
    later = health.this_machine()
    health.warnings(state, later)  # reads twice without error, and judges them as profile does
    assert isinstance(health.disturbances(state, later), list) and isinstance(health.unsettled(later), list)


def test_the_root_can_be_pointed_at_a_fake_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(health.ROOT_ENV, str(fake_board_tree(tmp_path)))
    state = health.this_machine()
    assert state["cores"][0]["governor"] == "ondemand" and str(tmp_path) in state["read_from"]


def test_what_makes_a_measurement_be_taken_again_and_when_a_board_is_calm(tmp_path: Path) -> None:
    def reading(name: str, throttled: str, governor: str = "ondemand", mhz: int = 1500) -> dict:
        root = fake_board_tree(tmp_path / name, (mhz, 1800), throttled)
        (root / health.CPU.lstrip("/") / "cpu0/cpufreq/scaling_governor").write_text(governor + "\n")
        return health.read_health(health.FileTree(root, no_commands), name)

    quiet = reading("quiet", "0")
    assert health.disturbances(quiet, quiet) == []  # ondemand and 82 °C are warned of, not a reason to wait
    assert not health.calm(quiet) and health.calm(reading("cool", "0") | {"temperatures_c": {}})
    sticky = reading("sticky", "50000")  # throttled once since boot, not now: nothing happened in between
    assert health.disturbances(sticky, sticky) == [] and health.disturbances(quiet, sticky) == [
        "throttle flags set during the measurement: under-voltage has occurred, throttling has occurred (0x50000)"
    ]
    assert health.disturbances(quiet, reading("now", "4"))[0] == "the board throttles: throttled now (0x4)"
    assert health.disturbances(quiet, reading("changed", "0", "performance", 1200)) == [
        "the governor changed during the measurement: cpu0 ondemand -> performance"
    ]
    # a clock that moves is a disturbance where a fixed governor holds it, by design under a scaling one
    fixed = reading("fixed", "0", "performance")
    assert health.disturbances(fixed, reading("slowed", "0", "performance", 1200)) == [
        "the clock moved during the measurement: cpu0 1500 -> 1200 MHz"
    ]
    assert health.disturbances(quiet, reading("scaled", "0", "ondemand", 1200)) == []
    assert health.throttles(reading("now", "4")) and health.throttles(sticky) is None
    x86 = fake_board_tree(tmp_path / "x86", (1500, 1800), "0")
    (x86 / health.PI_THROTTLED.lstrip("/")).unlink()  # a host without a Pi's throttle word
    no_flags = health.read_health(health.FileTree(x86, no_commands), "x86")
    assert no_flags["throttled"] is None and health.disturbances(no_flags, no_flags) == []
    unknown = {"read_from": None, "unknown": "no ssh"}
    assert health.disturbances(unknown, quiet) == [] and health.calm(unknown)


def test_cool_down_polls_until_calm_or_the_bound(tmp_path: Path) -> None:
    readings = iter([{"cores": [], "throttled": {"raw": "0x4", "flags": ["throttled now"]}}] * 2 + [{"cores": []}])
    waited: list[tuple[int, int]] = []
    last = health.cool_down(lambda: next(readings), health.CoolDown(5, 0.01), lambda *a: waited.append(a))
    assert last == {"cores": []} and len(waited) == 3 and waited[-1][1] == 5
    hot = {"cores": [], "throttled": {"raw": "0x4", "flags": ["throttled now"]}}
    assert not health.calm(health.cool_down(lambda: hot, health.CoolDown(0.1, 0.02)))


def test_a_boards_commands_come_back_in_the_same_single_command(tmp_path: Path) -> None:
    """A Pi without the firmware's sysfs file answers `vcgencmd get_throttled`, a Jetson `nvpmodel -q`: run in the
    one command that reads the files, and absent (None) on a board that has neither."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vcgencmd").write_text("#!/bin/sh\necho throttled=0x50005\n")
    (bin_dir / "vcgencmd").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}

    def sh(command: str) -> str | None:
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False, env=env)
        return done.stdout if done.returncode == 0 else None

    state = health.read_health(health.Captured.over(sh, str(tmp_path)), "sh")
    assert state["throttled"]["raw"] == "0x50005" and "under-voltage now" in state["throttled"]["flags"]
    assert state["power_mode"] is None and state["cores"] == []
