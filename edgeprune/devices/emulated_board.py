"""The emulated board's own processes: the tracker it registers with and the sshd it is reached through.

A real board has an sshd and dials a tracker on the workstation; the emulated board gets both on 127.0.0.1, so
that `board bootstrap`, `deploy` and every RPC stage reach it by the same code as a Raspberry Pi. Its RPC
server itself is started by `edgeprune board bootstrap` over SSH, under qemu. PIDs are recorded in the board's
folder (under edgeprune's state dir) and `power_off` stops exactly those, after checking each is still
what was started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune import atomic
from edgeprune.devices import emulation, loopback_sshd, rpc
from edgeprune.devices.farm import state_dir
from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    from edgeprune.devices.base import Device

START_TIMEOUT_S = 30.0
SSH_PORT_OFFSET = 2  # the board's sshd listens at its tracker's port + 2 (the tracker holds port and port + 1)


@dataclass(frozen=True)
class BoardHome:
    """One emulated board's folder: its sshd's keys, the workdir `deploy` uploads to, the recorded PIDs."""

    name: str

    @property
    def folder(self) -> Path:
        return state_dir() / "emulated" / self.name

    @property
    def sshd(self) -> loopback_sshd.SSHDFiles:
        return loopback_sshd.SSHDFiles(self.folder / "ssh")

    @property
    def workdir(self) -> Path:
        return self.folder / "home" / "edgeprune"

    @property
    def state_path(self) -> Path:
        return self.folder / "processes.json"

    def read_state(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self.state_path.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def _is_ours(role: str, pid: int, home: BoardHome) -> bool:
    """Alive and still the process recorded under `role` (a recycled PID is never signalled)."""
    cmdline = _cmdline(pid)
    if role == "sshd":
        return str(home.sshd.config).encode() in cmdline
    return b"tvm.exec.rpc_tracker" in cmdline


def _spawn_tracker(device: Device, log: Path) -> int:
    port = device.tracker_port
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", loopback_sshd.HOST]
            + ["--port", str(port), "--port-end", str(port + 1)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the command that powered the board on
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(EdgepruneError):
            rpc.tracker_summary(device.tracker_host, port, timeout=1.0)
            return proc.pid
        time.sleep(0.3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    raise EdgepruneError(f"the tracker for '{device.name}' did not start on {device.tracker}; see {log}")


def _tracker_answers(device: Device) -> bool:
    try:
        rpc.tracker_summary(device.tracker_host, device.tracker_port, timeout=1.0)
    except EdgepruneError:
        return False
    return True


def _check_loopback(device: Device) -> None:
    if device.tracker_host != loopback_sshd.HOST or device.ssh is None or device.ssh.host != loopback_sshd.HOST:
        raise EdgepruneError(
            f"device '{device.name}': an emulated board runs on this machine and listens on 127.0.0.1 only",
            hint="set tracker.host (and ssh.host, if given) to 127.0.0.1 in its profile",
        )


def power_on(device: Device) -> dict[str, Any]:
    """Make sure the board's tracker and sshd run (starting what does not); the root filesystem must be built
    and aarch64 binaries must run here. Returns what runs and which of it was started now."""
    assert device.ssh is not None  # the emulated kind always has one
    _check_loopback(device)
    emulation.require_rootfs()
    emulation.enable_binfmt()
    problem = loopback_sshd.sshd_problem()
    if problem:
        raise EdgepruneError(f"the emulated board needs an sshd: {problem}")
    home = BoardHome(device.name)
    home.workdir.mkdir(parents=True, exist_ok=True)
    state = {role: pid for role, pid in home.read_state().items() if _is_ours(role, pid, home)}
    started: list[str] = []
    if not _tracker_answers(device):
        state["tracker"] = _spawn_tracker(device, home.folder / "tracker.log")
        started.append("tracker")
    if not loopback_sshd.answers(device.ssh.port):
        files = loopback_sshd.prepare(home.sshd.folder)
        try:
            # Any aarch64 program runs in its sessions, as on a Pi: the venv `board setup` makes there included
            session_env = {"QEMU_LD_PREFIX": str(emulation.default_rootfs().path)}
            proc = loopback_sshd.start(files, device.ssh.port, detached=True, env=session_env)
        except OSError as exc:
            raise EdgepruneError(f"the sshd of '{device.name}' did not start: {exc}") from exc
        state["sshd"] = proc.pid
        started.append("sshd")
    atomic.write_json(home.state_path, state)
    return {
        "device": device.name,
        "tracker": device.tracker,
        "ssh_port": device.ssh.port,
        "pids": state,
        "started": started,
    }


def power_off(device: Device, only: list[str] | None = None) -> list[int]:
    """Stop the recorded processes (all, or the roles in `only`); returns the PIDs signalled."""
    home = BoardHome(device.name)
    state = home.read_state()
    stopped = []
    for role, pid in list(state.items()):
        if only is not None and role not in only:
            continue
        if _is_ours(role, pid, home):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM) if role == "tracker" else os.kill(pid, signal.SIGTERM)
            _wait_gone(role, pid, home)
            stopped.append(pid)
        del state[role]
    if state:
        atomic.write_json(home.state_path, state)
    else:
        home.state_path.unlink(missing_ok=True)
    return stopped


def _wait_gone(role: str, pid: int, home: BoardHome, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _is_ours(role, pid, home) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if _is_ours(role, pid, home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def status(device: Device) -> dict[str, Any]:
    """Which of the board's processes run, and the servers its tracker lists."""
    home = BoardHome(device.name)
    running = {role: pid for role, pid in home.read_state().items() if _is_ours(role, pid, home)}
    try:
        servers = rpc.server_counts(rpc.tracker_summary(device.tracker_host, device.tracker_port, timeout=2.0))
    except EdgepruneError:
        servers = None
    rootfs = emulation.default_rootfs()
    return {
        "device": device.name,
        "rootfs": str(rootfs.path) if rootfs.is_built() else None,
        "binfmt": emulation.binfmt_problem() or "ok",
        "processes": running,
        "ssh": device.ssh is not None and loopback_sshd.answers(device.ssh.port),
        "tracker_servers": servers,
    }


@contextlib.contextmanager
def powered(device: Device) -> Iterator[dict[str, Any]]:
    """The board on for the duration of a block: what this block started is stopped after it."""
    info = power_on(device)
    try:
        yield info
    finally:
        if info["started"]:
            power_off(device, only=info["started"])
