"""`edgeprune run` through to the board: this machine's CPU behind the local farm's RPC and a loopback sshd.

The first run meets an unknown host key: the measured result must be on disk all the same, the deploy error in
the summary, exit 2. The second, with --trust-new-host, skips every finished stage and deploys.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeprune.devices.base import Device
from tests.loopback_board import SSHServer, edgeprune_cli, write_board_profile

pytest_plugins = ["tests.board_fixtures"]  # the sshd fixture

RUN_ARGS = [
    "lenet5", "--data", "digits", "--input-shape", "1x16x16", "--method", "global", "--target", "0.8x",
    "--train-epochs", "2", "--finetune-epochs", "1", "--trials", "2", "--max-rounds", "3", "--json",
]  # fmt: skip
# Shorter samples than the default 10 x 50 ms: each of the table's ~50 entries is timed in 0.1 s instead of 0.5 s.
# A sample still averages hundreds of runs of these 0.1 ms kernels.
BOARD_TIMING = {"number": 2, "repeat": 5, "min_repeat_ms": 20}


def test_run_writes_its_result_before_deploying_then_deploys_under_its_own_name(
    local_farm: Device, sshd: SSHServer, tmp_path: Path
) -> None:
    board = write_board_profile(
        tmp_path / "board",
        sshd,
        tracker_port=local_farm.tracker_port,
        key=local_farm.key,
        key_file=sshd.client_key,
        trusted=False,
        target=local_farm.target,
        timing=BOARD_TIMING,
    )
    run_dir = tmp_path / "runs" / "lenet5 on board"  # a space: the board folder gets a safe name
    args = [*RUN_ARGS, "--device", str(board.profile), "--run-dir", str(run_dir)]

    refused = edgeprune_cli("run", *args, timeout=900)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert sshd.fingerprint in refused.stderr and "--trust-new-host" in refused.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["meets_target"] is True and summary["pruned"]["measured_ms"] > 0
    assert "host key" in summary["deploy"]["error"]
    assert (run_dir / "report.html").is_file()
    assert not board.workdir.exists()  # nothing went to a host we do not know

    deployed = edgeprune_cli("run", *args, "--trust-new-host", timeout=900)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    for skipped in ("> train", "> profile", "> compile", "> measure", "prune to"):
        assert skipped not in deployed.stderr
    result = json.loads(deployed.stdout)
    final = run_dir / f"round-{result['chosen_round']}" / "artifacts"
    assert result["deploy"]["remote_path"] == str(board.workdir / "lenet5-on-board")
    assert result["deploy"]["smoke"]["matches_reference"] is True
    for name in json.loads((final / "manifest.json").read_text())["files"]:
        assert (board.workdir / "lenet5-on-board" / name).read_bytes() == (final / name).read_bytes()
    assert json.loads((run_dir / "summary.json").read_text())["deploy"] == result["deploy"]
    assert f"127.0.0.1]:{sshd.port}" in board.known_hosts.read_text()  # trusted now, for the next time
