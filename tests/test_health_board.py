"""Board health through the device interface on real processes: the loopback board (a real sshd on 127.0.0.1,
its RPC through the local farm) read over SSH from a fake sysfs tree, reported by `devices check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeprune.devices import health
from edgeprune.devices.base import Device
from edgeprune.devices.profile import load_profile
from tests.health_tree import fake_board_tree
from tests.loopback_board import SSHServer, write_board_profile
from tests.test_verify import run_cli

pytest_plugins = ["tests.board_fixtures"]  # the sshd fixture


def test_devices_check_reports_an_ondemand_throttled_board_read_over_ssh(
    sshd: SSHServer,
    local_farm: Device,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    board = write_board_profile(
        tmp_path / "board",
        sshd,
        tracker_port=local_farm.tracker_port,
        key=local_farm.key,
        key_file=sshd.client_key,
        target=local_farm.target,
    )
    monkeypatch.setenv(health.ROOT_ENV, str(fake_board_tree(tmp_path / "sysfs")))
    state = load_profile(board.profile).health()
    assert state["read_from"] == f"ssh {sshd.user}@127.0.0.1:{sshd.port}"
    assert state["cores"][0]["governor"] == "ondemand" and "throttled now" in state["throttled"]["flags"]

    code, out, _ = run_cli(capsys, "devices", "check", str(board.profile), "--json")
    checked = json.loads(out)
    assert code == 0 and checked["health"]["cores"] == state["cores"]
    assert any("ondemand" in w for w in checked["warnings"]) and any("0x50005" in w for w in checked["warnings"])
    code, out, err = run_cli(capsys, "devices", "check", str(board.profile))
    text = " ".join((out + err).split())
    assert code == 0 and "governor ondemand/performance" in text and "warning: throttle flags set (0x50005)" in text


def test_a_board_without_ssh_is_unknown_not_an_error(tmp_path: Path) -> None:
    from edgeprune.devices.profile import load_device

    state = load_device("raspberry-pi-4").health()  # a shipped profile: no reachable board here
    assert state["read_from"] is None and state["unknown"]
    assert health.warnings(state) == [] and "health: unknown" in health.summary_line(state)


def test_devices_bench_says_the_noise_and_the_samples_a_1pct_interval_needs(
    local_farm: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "devices", "bench", "local", "--samples", "8", "--json")
    result = json.loads(out)
    assert code == 0 and result["samples"] == 8 and result["kernel"].startswith("matmul 128x128x128")
    assert result["min_ms"] <= result["interval"]["low"] <= result["median_ms"] <= result["interval"]["high"]
    assert result["samples_for_1pct"] >= 6 and result["spread"] >= 0 and result["health"]["read_from"]
    code, out, err = run_cli(capsys, "devices", "bench", "local", "--samples", "8")
    assert code == 0 and "a ±1% interval needs about" in " ".join((out + err).split())
    code, _, err = run_cli(capsys, "devices", "bench", "local", "--samples", "3")
    assert code == 2 and "at least 6" in err


def test_profile_on_the_loopback_board_refuses_a_throttling_board_then_remeasures_what_it_disturbed(
    sshd: SSHServer, local_farm: Device, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real profiler on the loopback board, its health read over SSH from a fake tree that the test changes
    while the entries are measured: a board that stays throttled is refused with nothing suspect in the table,
    and the resumed profile, throttled once and cooled, measures that chunk again and completes."""
    from edgeprune.errors import EdgepruneError
    from edgeprune.profiling.lut import lut_path
    from edgeprune.profiling.profiler import profile_model
    from tests.test_profiling_rpc import FAST, allow_second_tuning, narrow_tiny

    allow_second_tuning()
    board = write_board_profile(
        tmp_path / "board", sshd, tracker_port=local_farm.tracker_port, key=local_farm.key,
        key_file=sshd.client_key, target=local_farm.target,
    )  # fmt: skip
    root = fake_board_tree(tmp_path / "sysfs", (1800, 1800), throttled="0")
    (root / health.THERMAL.lstrip("/") / "thermal_zone0/temp").write_text("45000\n")
    monkeypatch.setenv(health.ROOT_ENV, str(root))
    throttle = root / health.PI_THROTTLED.lstrip("/")
    device = load_profile(board.profile)
    times = {"throttle": 1, "cooled": 0}  # how often the second entry throttles the board; cool-downs that work

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "entries" and done == 2 and times["throttle"]:
            times["throttle"] -= 1
            throttle.write_text("50005\n")
        if phase == "cooling" and times["cooled"]:
            times["cooled"] -= 1
            throttle.write_text("50000\n")  # no longer throttling; "has occurred" stays set until a reboot

    bundle = narrow_tiny()
    with pytest.raises(EdgepruneError, match="still throttles after") as refused:
        profile_model(bundle, device, on_progress=progress, cool=health.CoolDown(1.0, 0.2), **FAST)
    assert "governor to performance" in str(refused.value.hint)
    table = json.loads(lut_path(device).read_text())
    assert table["entries"] == {} and table["health"][-1]["refused"].startswith("the board throttles")
    assert table["health"][-1]["before"]["read_from"] == f"ssh {sshd.user}@127.0.0.1:{sshd.port}"

    throttle.write_text("0\n")
    times.update(throttle=1, cooled=1)
    report = profile_model(bundle, device, on_progress=progress, cool=health.CoolDown(5.0, 0.2), **FAST)
    table = json.loads(lut_path(device).read_text())
    assert report.entries_measured == report.entries_total == len(table["entries"]) > 2
    [disturbed] = table["health"][-1]["disturbed"]
    assert disturbed["cooled"] and "throttled now" in disturbed["disturbances"][0]
    assert any("0x50000" in w for w in report.health_warnings)  # the sticky flags are still warned of
