"""`edgeprune board`: an RPC server started over SSH (real sshd) registers with a real tracker, and stops."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from edgeprune.devices import rpc
from edgeprune.devices.profile import Device, load_device
from edgeprune.devices.remote import server
from edgeprune.errors import EdgepruneError
from tests.conftest import free_port
from tests.loopback_board import SSHServer, edgeprune_main, write_board_profile

pytest_plugins = ["tests.board_fixtures"]  # the sshd fixture


def _is_rpc_server(pid: int) -> bool:
    try:
        return b"tvm.exec.rpc_server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_bootstrap_registers_with_the_tracker_and_stop_removes_it(
    sshd: SSHServer, local_farm: Device, tmp_path: Path
) -> None:
    key = "loopback-board-rpc"  # its own key: the farm's servers (key 'local') do not count
    board_files = write_board_profile(
        tmp_path, sshd, key_file=sshd.client_key, tracker_port=local_farm.tracker_port, key=key
    )
    profile = str(board_files.profile)
    device = load_device(profile)
    assert server.registered(device) == 0

    proc = edgeprune_main("board", "bootstrap", "--device", profile, "--json")
    assert proc.returncode == 0, proc.stderr
    started = json.loads(proc.stdout)
    pid = started["pid"]
    try:
        assert started["already_running"] is False
        assert started["registered"] == 1
        assert rpc.server_counts(rpc.tracker_summary(device.tracker_host, device.tracker_port))[key]["free"] == 1
        assert _is_rpc_server(pid)  # the board is this machine: the recorded PID is that server
        # runtime only, plus the extra library that holds MetaSchedule's input filler (else tuning fails there)
        assert started["load_library"].endswith("/lib/libtvm_runtime_extra.so") and not started["warnings"]
        server_cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert server_cmd[server_cmd.index(b"--load-library") + 1] == started["load_library"].encode()
        assert b"TVM_USE_RUNTIME_LIB=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert any(
            " start-server " in line and "ssh=[127.0.0.1" in line
            for line in board_files.ssh_log.read_text().splitlines()
        )

        again = server.bootstrap(device)  # idempotent: the recorded server is reused, not doubled
        assert (again["already_running"], again["pid"], again["registered"]) == (True, pid, 1)

        result = rpc.check_device(device)  # a kernel built here runs through the board's server, and the filler
        assert result["roundtrip_ms"] > 0
        assert server.status(device)["running"] is True
    finally:
        stopped = edgeprune_main("board", "stop", "--device", profile, "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["stopped"] == pid
    assert not _is_rpc_server(pid)
    assert server.registered(device) == 0

    status = edgeprune_main("board", "status", "--device", profile, "--json")
    assert status.returncode == 1  # not running
    assert json.loads(status.stdout)["running"] is False
    assert server.stop(device)["stopped"] is None  # nothing recorded any more: nothing is signalled


def test_bootstrap_with_unreachable_tracker_fails_before_starting_anything(sshd: SSHServer, tmp_path: Path) -> None:
    files = write_board_profile(tmp_path, sshd, key_file=sshd.client_key, tracker_port=free_port())
    with pytest.raises(EdgepruneError, match="not reachable"):
        server.bootstrap(load_device(str(files.profile)))
    assert not files.ssh_log.exists()  # no command ran on the board


def python_without_tvm() -> str:
    """The system's Python, which has no TVM: a board nobody has set up."""
    system_python = shutil.which("python3", path="/usr/bin")
    if (
        system_python is None
        or subprocess.run([system_python, "-c", "import tvm"], capture_output=True).returncode == 0
    ):
        pytest.skip("needs a Python without TVM at /usr/bin/python3")
    return system_python


def test_bootstrap_refuses_a_board_without_tvm(sshd: SSHServer, local_farm: Device, tmp_path: Path) -> None:
    system_python = python_without_tvm()
    files = write_board_profile(
        tmp_path,
        sshd,
        key_file=sshd.client_key,
        tracker_port=local_farm.tracker_port,
        key="no-tvm",
        python=system_python,
    )
    with pytest.raises(EdgepruneError, match="no TVM on the board") as refused:
        server.bootstrap(load_device(str(files.profile)))
    assert "pip install apache-tvm==" in (refused.value.hint or "")
    assert not (files.workdir / ".edgeprune" / "rpc_server.json").exists()


def test_setup_installs_tvm_from_this_machine_on_a_board_without_it(
    sshd: SSHServer, local_farm: Device, tmp_path: Path
) -> None:
    """`board setup` on a board whose Python has no TVM (and no pip): the wheels fetched here are uploaded and
    installed into a venv in its work dir, the RPC server runs from that venv, and `devices check` passes there.
    A second setup finds TVM and installs nothing."""
    files = write_board_profile(
        tmp_path,
        sshd,
        key_file=sshd.client_key,
        tracker_port=local_farm.tracker_port,
        key="set-up-board",
        python=python_without_tvm(),
    )
    profile = str(files.profile)
    proc = edgeprune_main("board", "setup", "--device", profile, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    try:
        installed, venv = result["installed"], files.workdir / "venv"
        assert (installed["tvm"], installed["previous_tvm"]) == (metadata.version("apache-tvm"), None)
        assert installed["venv"] == str(venv) and installed["uploaded_bytes"] > 50e6  # TVM's wheel alone is ~100 MB
        assert (result["tvm"], result["registered"], result["already_running"]) == (installed["tvm"], 1, False)
        server_cmd = Path(f"/proc/{result['pid']}/cmdline").read_bytes().split(b"\0")
        assert server_cmd[0] == str(venv / "bin" / "python").encode() and b"tvm.exec.rpc_server" in server_cmd

        check = edgeprune_main("devices", "check", profile, "--json")
        assert check.returncode == 0, check.stderr
        assert json.loads(check.stdout)["roundtrip_ms"] > 0

        again = edgeprune_main("board", "setup", "--device", profile, "--json")
        assert again.returncode == 0, again.stderr
        second = json.loads(again.stdout)
        assert (second["installed"], second["already_running"], second["pid"]) == (None, True, result["pid"])
    finally:
        stopped = edgeprune_main("board", "stop", "--device", profile, "--json")
    assert stopped.returncode == 0, stopped.stderr
