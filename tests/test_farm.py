"""The local farm with real processes: tracker + servers on 127.0.0.1, a remote kernel, nothing left behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from edgeprune.devices import farm, rpc
from edgeprune.devices.profile import local_device
from edgeprune.errors import EdgepruneError
from tests.conftest import free_port
from tests.loopback_board import edgeprune_main


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return edgeprune_main(*args)  # the command line in this process: no 4-6 s of imports per command


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and b"tvm.exec.rpc_" in Path(f"/proc/{pid}/cmdline").read_bytes()


def running_in_groups(groups: list[int]) -> list[str]:
    """`ps` lines of processes in `groups` that have not exited (zombies have: they hold no port or memory)."""
    table = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,stat=,args="], capture_output=True, text=True).stdout
    return [
        line for line in table.splitlines() if int(line.split()[1]) in groups and not line.split()[2].startswith("Z")
    ]


def test_farm_lifecycle_through_cli(isolated_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables that move the 'local' device move `farm` too, so a farm started without flags is the one
    `local` reaches."""
    port = free_port()
    monkeypatch.setenv("EDGEPRUNE_LOCAL_PORT", str(port))
    monkeypatch.setenv("EDGEPRUNE_LOCAL_KEY", "lifecycle")
    up = cli("farm", "up", "--servers", "2")
    assert up.returncode == 0, up.stderr
    status = cli("farm", "status", "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["tracker"] == f"127.0.0.1:{port}"
    assert info["servers"]["lifecycle"] == {"free": 2, "busy": 0}
    pids = info["pids"]
    assert len(pids) == 3 and all(alive(p) for p in pids)

    check = cli("devices", "check", "local", "--json")
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["roundtrip_ms"] > 0

    down = cli("farm", "down", "--port", str(port))
    assert down.returncode == 0, down.stderr
    assert "all exited" in down.stderr and "SIGKILL" not in down.stderr  # the console writes to stderr
    assert running_in_groups(pids) == []  # at once: `down` returns when tracker, servers and workers are gone
    after = cli("farm", "status", "--port", str(port), "--json")
    assert after.returncode != 0
    assert json.loads(after.stdout)["pids"] == [] and json.loads(after.stdout)["running"] is False


def test_down_kills_processes_that_ignore_sigterm(isolated_env: pytest.MonkeyPatch) -> None:
    """Processes still running at the deadline are killed, and `down` says which, instead of leaving them."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited through fork and exec by the farm
    try:
        state = farm.up(servers=1, port=free_port(), key="deaf")
    finally:
        signal.signal(signal.SIGTERM, previous)
    start = time.monotonic()
    try:
        stopped = farm.down(state.port, timeout=2.0)
    except BaseException:  # a failed `down` must not leave processes that ignore SIGTERM behind
        for pid in state.pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        raise
    assert 2.0 <= time.monotonic() - start < 15
    assert stopped == {"pids": state.pids, "killed": list(reversed(state.pids))}
    assert running_in_groups(state.pids) == []
    for pid in state.pids:  # started here, so `down` reaped them (a /proc check would see a PID reused since)
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


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


def _runtime_only_server(tracker_port: int, key: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """An rpc_server started the way a board runs it: the TVM runtime library alone (`TVM_USE_RUNTIME_LIB=1`)."""
    first = free_port()
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(first),
             "--port-end", str(first + 100), "--tracker", f"127.0.0.1:{tracker_port}", "--key", key, *extra],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, TVM_USE_RUNTIME_LIB="1"),
        )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_check_fails_on_a_runtime_only_server_without_the_extra_library(
    local_farm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a real board hit: `devices check` passed, then tuning found no input filler on the server."""
    import tvm

    port = local_farm.tracker_port
    bare = _runtime_only_server(port, "runtime-only", tmp_path / "bare.log")
    try:
        rpc.wait_for_servers("127.0.0.1", port, "runtime-only", 1, 60)
        monkeypatch.setenv("EDGEPRUNE_LOCAL_KEY", "runtime-only")
        check = cli("devices", "check", "local")
        assert check.returncode != 0 and "Traceback" not in check.stderr
        assert rpc.MEASURE_FILL in check.stderr and "--load-library" in check.stderr
    finally:
        _stop(bare)

    extra = str(Path(tvm.__file__).parent / "lib" / "libtvm_runtime_extra.so")
    full = _runtime_only_server(port, "runtime-extra", tmp_path / "extra.log", "--load-library", extra)
    try:
        rpc.wait_for_servers("127.0.0.1", port, "runtime-extra", 1, 60)
        result = rpc.check_device(replace(local_farm, key="runtime-extra"), timeout=30)
        assert result["roundtrip_ms"] > 0
    finally:
        _stop(full)


def test_a_tracker_alone_listens_where_asked_for_boards_to_register(isolated_env: pytest.MonkeyPatch) -> None:
    """`farm up --tracker-only --host ADDR`: the tracker real boards register with (here another loopback address,
    standing in for this machine's LAN address), no servers; `farm status` and `farm down` find it by its port."""
    port = free_port()
    up = cli("farm", "up", "--tracker-only", "--host", "127.0.0.2", "--port", str(port))
    assert up.returncode == 0, up.stderr
    try:
        assert f"tracker up on 127.0.0.2:{port}" in up.stderr and "network you trust" in up.stderr
        info = json.loads(cli("farm", "status", "--port", str(port), "--json").stdout)
        assert (info["tracker"], info["running"], info["servers"]) == (f"127.0.0.2:{port}", True, {})
        assert len(info["pids"]) == 1 and alive(info["pids"][0])
        with pytest.raises(EdgepruneError, match="not reachable"):
            rpc.tracker_summary("127.0.0.1", port, timeout=1.0)  # it listens where it was told, nowhere else
    finally:
        down = cli("farm", "down", "--port", str(port))
    assert down.returncode == 0, down.stderr
    assert not alive(info["pids"][0])


def test_host_is_for_a_tracker_alone_and_must_be_an_address(isolated_env: pytest.MonkeyPatch) -> None:
    """The farm's own servers never listen beyond 127.0.0.1; nothing starts on a refused command."""
    port = free_port()
    with_servers = cli("farm", "up", "--host", "127.0.0.2", "--port", str(port))
    assert with_servers.returncode == 2 and "--tracker-only" in with_servers.stderr
    named = cli("farm", "up", "--tracker-only", "--host", "my-laptop", "--port", str(port))
    assert named.returncode == 2 and "not an IP address" in named.stderr
    assert farm.read_state(port) is None
