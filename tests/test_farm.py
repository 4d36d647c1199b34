"""The local farm with real processes: tracker + servers on 127.0.0.1, a remote kernel, nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeprune.devices import farm, rpc
from edgeprune.devices.profile import local_device
from edgeprune.errors import EdgepruneError
from tests.conftest import free_port


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True, timeout=180)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and b"tvm.exec.rpc_" in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_farm_lifecycle_through_cli(isolated_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    up = cli("farm", "up", "--servers", "2", "--port", str(port), "--key", "lifecycle")
    assert up.returncode == 0, up.stderr
    status = cli("farm", "status", "--port", str(port), "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["tracker"] == f"127.0.0.1:{port}"
    assert info["servers"]["lifecycle"] == {"free": 2, "busy": 0}
    pids = info["pids"]
    assert len(pids) == 3 and all(alive(p) for p in pids)

    monkeypatch.setenv("EDGEPRUNE_LOCAL_PORT", str(port))
    monkeypatch.setenv("EDGEPRUNE_LOCAL_KEY", "lifecycle")
    check = cli("devices", "check", "local", "--json")
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["roundtrip_ms"] > 0

    down = cli("farm", "down", "--port", str(port))
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)
    assert cli("farm", "status", "--port", str(port)).returncode != 0


def test_session_runs_remote_kernel(local_farm) -> None:
    result = rpc.check_device(local_farm)
    assert result["connect_ms"] > 0 and result["roundtrip_ms"] > 0


def test_each_server_listens_in_a_port_range_of_its_own(local_farm) -> None:
    """Two servers probing one range could both bind a port and one then fail to listen (seen in CI)."""
    port = local_farm.tracker_port
    logs = farm.state_dir() / f"farm-{port}-logs"
    span = farm.SERVER_PORT_RANGE // 2
    for index in range(2):
        bound = [int(line.rsplit(":", 1)[1]) for line in (logs / f"server-{index}.log").read_text().splitlines()
                 if "bind to" in line]  # fmt: skip
        assert len(bound) == 1 and port + 1 + index * span <= bound[0] < port + 1 + (index + 1) * span


def test_second_farm_on_same_port_refused(local_farm) -> None:
    with pytest.raises(EdgepruneError, match="already"):
        farm.up(servers=1, port=local_farm.tracker_port, key="local")


def test_missing_tracker_is_a_fast_clear_error(
    isolated_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEPRUNE_LOCAL_PORT", str(free_port()))
    start = time.monotonic()
    with pytest.raises(EdgepruneError) as info:
        rpc.request_session(local_device(), timeout=3)
    assert time.monotonic() - start < 10
    assert "not reachable" in info.value.message and info.value.hint


def test_unknown_key_names_key_and_known_keys(local_farm) -> None:
    from dataclasses import replace

    wrong = replace(local_farm, key="no-such-key")
    with pytest.raises(EdgepruneError) as info:
        rpc.request_session(wrong, timeout=3)
    assert "no-such-key" in info.value.message and "local" in info.value.message


def test_devices_check_error_exits_nonzero(isolated_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    profile = tmp_path / "ghost.toml"
    profile.write_text(
        f'name = "ghost"\n[target]\nkind = "llvm"\n[tracker]\nhost = "127.0.0.1"\nport = {free_port()}\nkey = "ghost"\n'
    )
    result = cli("devices", "check", str(profile), "--timeout", "2")
    assert result.returncode == 2
    assert "not reachable" in result.stderr and "Traceback" not in result.stderr
