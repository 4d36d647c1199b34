"""Sessions with a device through its TVM RPC tracker, with timeouts and errors a user can act on.

TVM's own client retries a refused tracker for a minute and blocks forever on a key nobody serves; every
stage that touches a device goes through here instead, so those cases fail fast and say what to try.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    from tvm.rpc import RPCSession

    from edgeprune.devices.base import Device

DEFAULT_TIMEOUT_S = 10.0
# MetaSchedule's RPC runner fills every measurement's inputs with this; it lives in libtvm_runtime_extra.so,
# which a runtime-only server (`TVM_USE_RUNTIME_LIB=1`) loads only when given `--load-library`.
MEASURE_FILL = "tvm.contrib.random.random_fill_for_measure"


def _check_reachable(host: str, port: int, timeout: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise EdgepruneError(
            f"RPC tracker {host}:{port} is not reachable ({exc.strerror or exc})",
            hint="start it (for the local device: `edgeprune farm up`), or fix tracker.host/port in the profile",
        ) from exc


def _with_deadline(fn: Any, timeout: float, on_timeout: EdgepruneError, cancel: Any = None) -> Any:
    """Run a blocking TVM call in a thread; give up after `timeout` seconds with `on_timeout`."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        if cancel is not None:
            cancel()
        raise on_timeout
    if "error" in box:
        raise box["error"]
    return box["value"]


def tracker_summary(host: str, port: int, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """The tracker's raw summary: `queue_info` per key and `server_info` per registered server."""
    from tvm import rpc

    _check_reachable(host, port, timeout)

    def query() -> dict[str, Any]:
        tracker = rpc.connect_tracker(host, port)
        try:
            return tracker.summary()
        finally:
            tracker.close()

    return _with_deadline(query, timeout, EdgepruneError(f"RPC tracker {host}:{port} did not answer in {timeout}s"))


def server_counts(summary: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Free and busy servers per key, from a tracker summary."""
    totals: dict[str, int] = {}
    for info in summary.get("server_info", []):
        key = str(info.get("key", "")).split(":", 1)[-1]
        totals[key] = totals.get(key, 0) + 1
    counts: dict[str, dict[str, int]] = {}
    for key in sorted(set(totals) | set(summary.get("queue_info", {}))):
        free = int(summary.get("queue_info", {}).get(key, {}).get("free", 0))
        total = totals.get(key, free)
        if total or free:
            counts[key] = {"free": free, "busy": max(total - free, 0)}
    return counts


def request_session(device: Device, timeout: float = DEFAULT_TIMEOUT_S, session_timeout: float = 0) -> RPCSession:
    """A session on one of the device's servers, or a clear error within `timeout` seconds."""
    from tvm import rpc

    host, port, key = device.tracker_host, device.tracker_port, device.key
    counts = server_counts(tracker_summary(host, port, timeout))
    if key not in counts:
        known = ", ".join(counts) or "none"
        raise EdgepruneError(
            f"no RPC server registered under key '{key}' at tracker {host}:{port} (keys there: {known})",
            hint=(
                f"start one: {device.start_hint()}, or `python -m tvm.exec.rpc_server --tracker {host}:{port} "
                f"--key {key}` where the device runs"
            ),
        )
    tracker = rpc.connect_tracker(host, port)
    busy = EdgepruneError(
        f"no free RPC server under key '{key}' at {host}:{port} within {timeout}s ({counts[key]['busy']} busy)",
        hint="wait for the running job, or add servers (`edgeprune farm up --servers N`)",
    )
    try:
        return _with_deadline(
            lambda: tracker.request(key, priority=1, session_timeout=session_timeout, max_retry=1),
            timeout,
            busy,
            cancel=tracker.close,
        )
    except RuntimeError as exc:
        raise EdgepruneError(f"RPC request for key '{key}' at {host}:{port} failed: {exc}") from exc


def wait_for_servers(host: str, port: int, key: str, count: int, timeout: float) -> dict[str, dict[str, int]]:
    """Poll the tracker until `count` servers under `key` are free; returns the last counts."""
    deadline = time.monotonic() + timeout
    counts: dict[str, dict[str, int]] = {}
    while time.monotonic() < deadline:
        try:
            counts = server_counts(tracker_summary(host, port, timeout=2.0))
        except EdgepruneError:
            counts = {}
        if counts.get(key, {}).get("free", 0) >= count:
            return counts
        time.sleep(0.5)
    raise EdgepruneError(
        f"tracker {host}:{port} lists {counts.get(key, {}).get('free', 0)} of {count} servers under '{key}' "
        f"after {timeout:.0f}s"
    )


def _check_measure_fill(session: RPCSession, device: Device, tensor: Any) -> None:
    """Call MetaSchedule's input filler on the server, as its runner does before every measurement."""
    try:
        fill = session.get_function(MEASURE_FILL)
    except AttributeError as exc:
        raise EdgepruneError(
            f"device '{device.name}': its RPC server lacks {MEASURE_FILL}, which MetaSchedule calls to fill the "
            "inputs of every measurement, so `profile` and `compile` would fail at their first tuning step",
            hint="the server runs the TVM runtime alone (TVM_USE_RUNTIME_LIB=1): restart it with --load-library "
            "<the board's tvm package>/lib/libtvm_runtime_extra.so (`edgeprune board stop --device "
            f"{device.name}` then `edgeprune board bootstrap --device {device.name}` does that)",
        ) from exc
    fill(tensor)


def build_kernel(device: Device, mod: Any) -> Any:
    """A TensorIR module built for the device's target: a GPU kernel bound to threads first (dlight's fallback)."""
    import tvm

    target = device.tvm_target()
    if "gpu" in target.keys:
        from tvm.s_tir import dlight

        with target:
            mod = dlight.ApplyDefaultSchedule(dlight.gpu.Fallback())(mod)
    return tvm.tirx.build(mod, target=target)


def check_device(device: Device, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, float]:
    """Build a tiny kernel for the device's target, run it there and check the result.

    Proves the whole path works: tracker, key, server, the device's toolchain and its runtime, and that the
    server has the input filler tuning needs (else `profile` and `compile` fail at their first tuning step).
    """
    import tempfile
    from pathlib import Path

    import numpy as np
    import tvm
    from tvm import te

    size = 64
    a = te.placeholder((size,), name="a", dtype="float32")
    b = te.compute((size,), lambda i: a[i] * 2.0 + 1.0, name="b")
    lib = build_kernel(device, tvm.IRModule({"main": te.create_prim_func([a, b])}))
    start = time.perf_counter()
    session = request_session(device, timeout=timeout)
    connected = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = device.export(lib, Path(tmp), stem="edgeprune_check")
        session.upload(str(path))
        func = session.load_module(path.name)["main"]
    dev = device.runtime_device(session)
    data = np.arange(size, dtype="float32")
    out = tvm.runtime.tensor(np.zeros(size, dtype="float32"), dev)
    func(tvm.runtime.tensor(data, dev), out)
    done = time.perf_counter()
    if not np.allclose(out.numpy(), data * 2 + 1):
        raise EdgepruneError(f"device '{device.name}' computed a wrong result in the check kernel")
    _check_measure_fill(session, device, out)
    return {"connect_ms": (connected - start) * 1e3, "roundtrip_ms": (done - connected) * 1e3}
