"""`edgeprune board bootstrap|stop|status`: the TVM RPC server on a board, started and stopped over SSH.

The board runner starts `python -m tvm.exec.rpc_server --tracker H:P --key K` detached with the TVM runtime
alone plus `--load-library <board's tvm>/lib/libtvm_runtime_extra.so` (it holds the input filler MetaSchedule's
runner calls on every measurement), its own session, log in `<remote_workdir>/.edgeprune/rpc_server.log`, and
records its PID in `.edgeprune/rpc_server.json` on the board; `stop` signals exactly that PID after checking
it is still that server. Registration is confirmed from this machine by asking the tracker, the same way every
stage finds the board.
"""

from __future__ import annotations

import ipaddress
import posixpath
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

from edgeprune.devices import rpc
from edgeprune.devices.base import Device
from edgeprune.devices.remote import ssh
from edgeprune.devices.remote.runner import RemoteRunner, install_runner
from edgeprune.errors import EdgepruneError

REGISTER_TIMEOUT_S = 60.0
STATE_FILE = "rpc_server.json"
LOG_FILE = "rpc_server.log"


def _noop(*_: Any) -> None:
    return None


def _paths(runner: RemoteRunner) -> tuple[str, str]:
    return posixpath.join(runner.state_dir, STATE_FILE), posixpath.join(runner.state_dir, LOG_FILE)


def registered(device: Device, timeout: float = 3.0) -> int:
    """Servers (free + busy) the device's tracker lists under the device's key."""
    counts = rpc.server_counts(rpc.tracker_summary(device.tracker_host, device.tracker_port, timeout=timeout))
    entry = counts.get(device.key, {})
    return entry.get("free", 0) + entry.get("busy", 0)


def _wait_registered(device: Device, condition: Callable[[int], bool], timeout: float) -> int | None:
    """Poll the tracker until `condition(count)` holds; the last count, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        count = registered(device)
        if condition(count):
            return count
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def board_tracker(device: Device, override: str | None) -> str:
    """The tracker address as the board must dial it (may differ from this machine's view of it)."""
    tracker = override or device.tracker
    host, _, port = tracker.rpartition(":")
    if not host or not port.isdigit():
        raise EdgepruneError(f"tracker address '{tracker}' is not HOST:PORT")
    return tracker


def loopback_warning(device: Device, tracker: str) -> str | None:
    """A loopback tracker address is the board itself, unless the board is this machine."""
    if device.ssh and _is_loopback(tracker.rpartition(":")[0]) and not _is_loopback(device.ssh.host):
        return (
            f"the board will look for the tracker at {tracker}, i.e. on itself; pass --tracker "
            "<this machine's address as the board sees it>:PORT if the tracker runs here"
        )
    return None


def on_this_machine(device: Device, tracker: str) -> bool:
    """A board reached at a loopback address whose tracker is on loopback too is this machine (the emulated
    board, a test's board): its RPC server then listens on 127.0.0.1 only, not on every interface."""
    return device.ssh is not None and _is_loopback(device.ssh.host) and _is_loopback(tracker.rpartition(":")[0])


def _probe(runner: RemoteRunner, device: Device) -> dict[str, Any]:
    """The board's Python and TVM; refuses a board without the TVM runtime, or with another TVM than this
    machine's: TVM's RPC protocol and the libraries compiled here are only good for the same release, and a
    mismatch otherwise surfaces later as an obscure failure in the middle of tuning."""
    info = runner.call("probe", timeout=120)
    local = metadata.version("apache-tvm")
    install = (
        f"`edgeprune board setup --device {device.name}` installs it from this machine (the board needs no "
        f"internet); or on the board: {runner.python[0]} -m pip install apache-tvm=={local}"
    )
    if not info.get("tvm"):
        raise EdgepruneError(
            f"no TVM on the board ({info.get('tvm_error')})",
            hint=f"{install} (or set remote.python in the profile to a Python that has it)",
        )
    if info["tvm"] != local:
        raise EdgepruneError(
            f"the board has TVM {info['tvm']}, this machine TVM {local}: RPC and compiled libraries need the same "
            "release on both",
            hint=install,
        )
    return info


def bootstrap(
    device: Device,
    *,
    trust_new_host: bool = False,
    tracker: str | None = None,
    timeout: float = REGISTER_TIMEOUT_S,
    on_stage: Callable[[str], None] = _noop,
) -> dict[str, Any]:
    """Start the board's RPC server (once) and return when the tracker lists it."""
    ssh.require_ssh(device)
    dial = board_tracker(device, tracker)
    before = registered(device)  # also fails fast when this machine cannot reach the tracker
    on_stage(f"connecting to {device.name}")
    with ssh.connection(device, trust_new_host=trust_new_host) as conn:
        runner = install_runner(conn, device)
        on_stage("checking the board's Python and TVM")
        info = _probe(runner, device)
        state, log = _paths(runner)
        current = runner.call("server-status", "--state", state)
        if current["running"] and (current.get("tracker"), current.get("key")) != (dial, device.key):
            raise EdgepruneError(
                f"an RPC server (pid {current['pid']}) already runs on the board for tracker "
                f"{current.get('tracker')} key '{current.get('key')}'",
                hint=f"`edgeprune board stop --device {device.name}` first",
            )
        on_stage(f"starting rpc_server for {dial} key '{device.key}'")
        listen = ["--host", "127.0.0.1"] if on_this_machine(device, dial) else []
        started = runner.call(
            "start-server", "--state", state, "--log", log, "--tracker", dial, "--key", device.key, *listen
        )
        expected = before if started["already_running"] else before + 1
        on_stage(f"waiting for the tracker {device.tracker} to list it")
        count = _wait_registered(device, lambda n: n >= max(expected, 1), timeout)
        if count is None:
            tail = runner.call("server-status", "--state", state).get("log_tail", "")
            runner.call("stop-server", "--state", state)
            raise EdgepruneError(
                f"the RPC server started on the board but tracker {device.tracker} did not list it under "
                f"'{device.key}' within {timeout:.0f}s (server stopped again); its log:\n{tail}",
                hint="the board must reach the tracker at the address it was given: pass --tracker HOST:PORT",
            )
        host = conn.label
    warnings = [w for w in (loopback_warning(device, dial),) if w]
    if not started.get("load_library"):
        warnings.append(
            "the board's RPC server runs without libtvm_runtime_extra.so, so tuning cannot measure there "
            f"(`edgeprune devices check {device.name}` tells); a server started by an older edgeprune: "
            f"`edgeprune board stop --device {device.name}` and bootstrap again"
        )
    return {
        "device": device.name,
        "host": host,
        "pid": started["pid"],
        "already_running": started["already_running"],
        "tracker": dial,
        "key": device.key,
        "registered": count,
        "python": info["python"],
        "tvm": info["tvm"],
        "machine": info["machine"],
        "load_library": started.get("load_library"),
        "log": log,
        "warnings": warnings,
    }


def stop(device: Device, *, trust_new_host: bool = False, timeout: float = 15.0) -> dict[str, Any]:
    """Stop the recorded server; waits until the tracker drops it when the tracker is reachable."""
    try:
        before: int | None = registered(device)
    except EdgepruneError:
        before = None
    with ssh.connection(device, trust_new_host=trust_new_host) as conn:
        runner = install_runner(conn, device)
        result = runner.call("stop-server", "--state", _paths(runner)[0])
        host = conn.label
    after = before
    if result["stopped"] is not None and before:
        after = _wait_registered(device, lambda n: n < before, timeout)
        if after is None:
            raise EdgepruneError(
                f"stopped pid {result['stopped']} on the board, but tracker {device.tracker} still lists "
                f"{before} server(s) under '{device.key}' after {timeout:.0f}s"
            )
    return {"device": device.name, "host": host, **result, "registered": after}


def status(device: Device, *, trust_new_host: bool = False) -> dict[str, Any]:
    """The recorded server (pid, running, tracker, key, log tail) and what the tracker lists for the key."""
    with ssh.connection(device, trust_new_host=trust_new_host) as conn:
        runner = install_runner(conn, device)
        state = runner.call("server-status", "--state", _paths(runner)[0])
        host = conn.label
    try:
        count: int | None = registered(device)
    except EdgepruneError:
        count = None
    return {
        "device": device.name,
        "host": host,
        "pid": state.get("pid"),
        "running": state["running"],
        "tracker": state.get("tracker"),
        "key": state.get("key", device.key),
        "registered": count,
        "log_tail": state.get("log_tail", ""),
    }
