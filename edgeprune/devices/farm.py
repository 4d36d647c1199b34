"""The local farm: a real TVM RPC tracker and N real RPC servers on 127.0.0.1, the same path as a board; or a
tracker alone (no servers) for real boards on a LAN to register with, listening where the user says.

Processes are started detached, their PIDs recorded in a state file per tracker port, and `down` stops
exactly those (checking each PID still runs a TVM RPC process before signalling it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgeprune import atomic
from edgeprune.devices import rpc
from edgeprune.devices.base import Device
from edgeprune.devices.builtin import LOCAL, LOCAL_DEFAULT_PORT
from edgeprune.errors import EdgepruneError

HOST = "127.0.0.1"  # the farm's servers never listen beyond loopback; its tracker only where `up(host=...)` says
EVERY_INTERFACE = ("0.0.0.0", "::")
START_TIMEOUT_S = 90.0
SERVER_PORT_RANGE = 1000  # the servers' ports: above the tracker's, split evenly between them
MAX_SERVERS = 50
STOP_TIMEOUT_S = 10.0  # after SIGTERM, before SIGKILL


@dataclass
class FarmState:
    port: int
    key: str
    tracker_pid: int
    server_pids: list[int] = field(default_factory=list)
    log_dir: str = ""
    host: str = HOST  # where the tracker listens

    @property
    def pids(self) -> list[int]:
        return [self.tracker_pid, *self.server_pids]

    @property
    def tracker(self) -> str:
        return f"{self.host}:{self.port}"


def _dial(host: str) -> str:
    """Where this machine reaches a tracker that listens on `host` (every interface includes loopback)."""
    return HOST if host in EVERY_INTERFACE else host


def _check_host(host: str, servers: int) -> None:
    """A tracker may listen on a LAN address, for boards to register with; the farm's own servers may not."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise EdgepruneError(
            f"--host '{host}' is not an IP address", hint="this machine's address as the boards see it, or 0.0.0.0"
        ) from None
    if host != HOST and servers:
        raise EdgepruneError(
            f"the farm's servers listen on {HOST} only; --host {host} is for a tracker alone",
            hint="add --tracker-only: real boards register with it (`edgeprune board setup --device NAME`)",
        )


def state_dir() -> Path:
    return Path(os.environ.get("EDGEPRUNE_STATE_DIR", Path.home() / ".local" / "state" / "edgeprune"))


def state_path(port: int) -> Path:
    return state_dir() / f"farm-{port}.json"


def read_state(port: int) -> FarmState | None:
    path = state_path(port)
    if not path.exists():
        return None
    try:
        return FarmState(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise EdgepruneError(f"farm state file {path} is corrupt: {exc}", hint=f"remove {path}") from exc


def _is_rpc_process(pid: int) -> bool:
    """True when `pid` is alive and is one of TVM's RPC processes (guards against recycled PIDs)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"tvm.exec.rpc_" in cmdline


def _spawn(args: list[str], log: Path) -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: `down` also ends the server's forked workers
            env=env,
        )
    return proc.pid


def _live_groups() -> set[int]:
    """Process groups with a member that has not exited (a zombie has: it holds no port, file or memory)."""
    groups = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # exited while we looked
        if state not in ("Z", "X"):
            groups.add(int(group))
    return groups


def _unreaped(pid: int) -> bool:
    """Reap `pid` when it is a child of this process that has exited; True while it is a child not yet reaped.

    A killed leader shows as a zombie in /proc while its other threads still exit, and only then can it be
    reaped: asking /proc alone would return with a zombie left behind."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # not this process's child (an orphan's zombie is its reaper's job), or reaped already
    return done == 0


def _wait_gone(groups: list[int], timeout: float) -> list[int]:
    """Wait until no member of `groups` runs; returns the groups that still do after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        children = {pid for pid in groups if _unreaped(pid)}
        live = _live_groups()
        alive = [group for group in groups if group in live or group in children]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def _signal_groups(groups: list[int], sig: signal.Signals) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


def _stop_pids(pids: list[int], timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """SIGTERM each farm process's group, wait until every member has exited, SIGKILL what outlives `timeout`.

    Each process leads a group of its own (start_new_session), which also holds the workers a server forks per
    session: a leader's exit alone does not free the ports and cores. Returns the groups that needed SIGKILL.
    """
    groups = [pid for pid in pids if _is_rpc_process(pid)]  # never signal a recycled PID
    _signal_groups(groups, signal.SIGTERM)
    stubborn = _wait_gone(groups, timeout)
    _signal_groups(stubborn, signal.SIGKILL)
    if _wait_gone(stubborn, timeout):
        raise EdgepruneError(f"processes of the farm's groups {stubborn} still run after SIGKILL")
    return stubborn


def up(
    servers: int = 1,
    port: int = LOCAL_DEFAULT_PORT,
    key: str = LOCAL,
    timeout: float = START_TIMEOUT_S,
    host: str = HOST,
    tracker_only: bool = False,
) -> FarmState:
    """Start a tracker on `host`:`port` and `servers` servers under `key` on 127.0.0.1; return once all are free.
    `tracker_only`: the tracker alone, which may listen on a LAN address (`host`) for real boards to register with."""
    if tracker_only:
        servers = 0
    elif not 1 <= servers <= MAX_SERVERS:
        raise EdgepruneError(f"--servers must be between 1 and {MAX_SERVERS}")
    _check_host(host, servers)
    existing = read_state(port)
    if existing and any(_is_rpc_process(p) for p in existing.pids):
        raise EdgepruneError(
            f"a farm is already running on {existing.tracker} (pids {existing.pids})",
            hint=f"`edgeprune farm down --port {port}` first, or pick another --port",
        )
    with contextlib.suppress(EdgepruneError):
        rpc.tracker_summary(_dial(host), port, timeout=1.0)
        raise EdgepruneError(f"something already answers as a tracker on {host}:{port}", hint="pick another --port")
    log_dir = state_dir() / f"farm-{port}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    tracker_pid = _spawn(
        ["tvm.exec.rpc_tracker", "--host", host, "--port", str(port), "--port-end", str(port + 1)],
        log_dir / "tracker.log",
    )
    state = FarmState(port=port, key=key, tracker_pid=tracker_pid, log_dir=str(log_dir), host=host)
    atomic.write_json(state_path(port), asdict(state))
    try:
        _wait_tracker(_dial(host), port, timeout)
        span = SERVER_PORT_RANGE // max(servers, 1)
        for index in range(servers):
            first = port + 1 + index * span  # a range of its own: TVM's server retries a port it cannot bind,
            state.server_pids.append(  # but not one it bound and then could not listen on (a sibling took it)
                _spawn(
                    [
                        "tvm.exec.rpc_server",
                        "--host",
                        HOST,
                        "--port",
                        str(first),
                        "--port-end",
                        str(first + span),  # exclusive
                        "--tracker",
                        f"{HOST}:{port}",
                        "--key",
                        key,
                    ],
                    log_dir / f"server-{index}.log",
                )
            )
            atomic.write_json(state_path(port), asdict(state))
        if servers:
            rpc.wait_for_servers(HOST, port, key, servers, timeout)
    except BaseException:
        _stop_pids(state.pids)
        state_path(port).unlink(missing_ok=True)
        raise
    return state


def _wait_tracker(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rpc.tracker_summary(host, port, timeout=1.0)
            return
        except EdgepruneError:
            time.sleep(0.3)
    raise EdgepruneError(f"the tracker on {host}:{port} did not start in {timeout:.0f}s (see its log)")


def status(port: int = LOCAL_DEFAULT_PORT) -> dict[str, object]:
    """What `farm status --json` prints: tracker address, free/busy servers per key, recorded PIDs."""
    state = read_state(port)
    pids = [p for p in state.pids if _is_rpc_process(p)] if state else []
    host = state.host if state else HOST
    try:
        servers = rpc.server_counts(rpc.tracker_summary(_dial(host), port, timeout=3.0))
        running = True
    except EdgepruneError:
        servers, running = {}, False
    return {"tracker": f"{host}:{port}", "running": running, "servers": servers, "pids": pids}


def down(port: int = LOCAL_DEFAULT_PORT, timeout: float = STOP_TIMEOUT_S) -> dict[str, list[int]]:
    """Stop exactly the processes this farm started and return once all of them and their workers are gone.

    Returns the farm's PIDs (`pids`) and those that ignored SIGTERM for `timeout` seconds and were killed
    (`killed`).
    """
    state = read_state(port)
    if state is None:
        raise EdgepruneError(f"no farm recorded on port {port}", hint="`edgeprune farm status` shows what runs")
    killed = _stop_pids(list(reversed(state.pids)), timeout)
    state_path(port).unlink(missing_ok=True)
    return {"pids": state.pids, "killed": killed}


@contextlib.contextmanager
def ensure_farm(device: Device, servers: int = 1) -> Iterator[Device]:
    """Use a running farm at the device's tracker, else start one for the duration of the block."""
    try:
        counts = rpc.server_counts(rpc.tracker_summary(device.tracker_host, device.tracker_port, timeout=2.0))
    except EdgepruneError:
        counts = None
    if counts is not None:
        if device.key not in counts:
            raise EdgepruneError(
                f"a tracker runs on {device.tracker} but has no server under key '{device.key}'",
                hint="`edgeprune farm down` and start again, or `edgeprune farm up --key local`",
            )
        yield device
        return
    up(servers=servers, port=device.tracker_port, key=device.key)
    try:
        yield device
    finally:
        down(device.tracker_port)
