"""`edgeprune board setup`: a board made ready over SSH, with no internet on the board.

Checks the board's Python (the runner's `probe`). Where it lacks TVM's runtime, or has another release than this
machine (RPC and compiled libraries need the same one), this machine's release is installed FROM HERE: the wheels
for the board's platform are fetched here (wheels.py), uploaded by SFTP to `<workdir>/.edgeprune/wheels/`, and
installed into a venv at `<workdir>/venv` by pip run from its own wheel (the board's Python may have no pip, and
never reaches an index). Every later command runs the board's Python from that venv (runner.py). Then the RPC
server is bootstrapped, as `board bootstrap` does.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from edgeprune.devices.base import Device
from edgeprune.devices.remote import server, ssh, wheels
from edgeprune.devices.remote.runner import VENV, install_runner, venv_python
from edgeprune.errors import EdgepruneError

INSTALL_TIMEOUT_S = 1800.0  # unpacking ~400 MB of TVM on a Pi's SD card


def _noop(*_: Any) -> None:
    return None


def _upload_missing(conn: ssh.BoardConnection, files: list[Path], folder: str, on_stage: Callable[[str], None]) -> int:
    """Upload each file the board's `folder` lacks at its size (temp name, then rename); returns bytes sent."""
    conn.makedirs(folder)
    sent = 0
    for index, path in enumerate(files, 1):
        remote = posixpath.join(folder, path.name)
        size = path.stat().st_size
        try:
            if conn.sftp.stat(remote).st_size == size:
                continue
        except FileNotFoundError:
            pass
        on_stage(f"uploading {path.name} ({size / 1e6:.1f} MB, {index}/{len(files)})")
        conn.put(path, f"{remote}.partial")
        conn.rename(f"{remote}.partial", remote)
        sent += size
    return sent


def _install(conn: ssh.BoardConnection, device: Device, workdir: str, folder: str, pip_wheel: str) -> None:
    """A venv in the work dir (made by the profile's Python, without pip: Debian's Python may lack ensurepip),
    then pip, run from its wheel, installs from the uploaded folder only."""
    python = venv_python(workdir)
    if not conn.exists(python):
        base = " ".join(shlex.quote(word) for word in shlex.split(device.remote_python))
        conn.check(f"{base} -m venv --without-pip {shlex.quote(posixpath.join(workdir, VENV))}", timeout=300)
    pip = posixpath.join(folder, pip_wheel, "pip")
    words = [python, pip, "install", "--no-index", "--find-links", folder, "--disable-pip-version-check", "--quiet"]
    command = " ".join(shlex.quote(word) for word in [*words, *wheels.runtime_requirements()])
    conn.check(command, timeout=INSTALL_TIMEOUT_S)


def setup(
    device: Device,
    *,
    trust_new_host: bool = False,
    tracker: str | None = None,
    timeout: float = server.REGISTER_TIMEOUT_S,
    on_stage: Callable[[str], None] = _noop,
) -> dict[str, Any]:
    """TVM's runtime on the board (installed from here where it is missing or another release), then its RPC
    server started and registered; returns `board bootstrap`'s result with what was installed."""
    ssh.require_ssh(device)
    server.registered(device)  # fails fast when this machine cannot reach the tracker, before any upload
    local = metadata.version("apache-tvm")
    installed = None
    on_stage(f"connecting to {device.name}")
    with ssh.connection(device, trust_new_host=trust_new_host) as conn:
        runner = install_runner(conn, device)
        on_stage("checking the board's Python and TVM")
        info = runner.call("probe", timeout=120)
        if info.get("tvm") != local:
            board = wheels.BoardPlatform.from_probe(info)
            on_stage(f"fetching TVM {local}'s wheels for {board.name} here")
            files = wheels.fetch(board)
            pip_wheel = next((p.name for p in files if p.name.startswith(f"{wheels.INSTALLER}-")), None)
            if pip_wheel is None:
                raise EdgepruneError(f"no pip wheel among the board's wheels in {wheels.wheel_folder(board)}")
            folder = posixpath.join(runner.state_dir, "wheels")
            sent = _upload_missing(conn, files, folder, on_stage)
            on_stage(f"installing TVM {local} into {posixpath.join(runner.workdir, VENV)} on the board")
            _install(conn, device, runner.workdir, folder, pip_wheel)
            after = install_runner(conn, device).call("probe", timeout=120)
            if after.get("tvm") != local:
                raise EdgepruneError(
                    f"TVM {local} was installed on the board, yet its Python reports {after.get('tvm')}: "
                    f"{after.get('tvm_error', '')}"
                )
            installed = {
                "tvm": local,
                "previous_tvm": info.get("tvm"),
                "platform": board.name,
                "venv": posixpath.join(runner.workdir, VENV),
                "python": after["executable"],
                "wheels": len(files),
                "uploaded_bytes": sent,
            }
    started = server.bootstrap(
        device, trust_new_host=trust_new_host, tracker=tracker, timeout=timeout, on_stage=on_stage
    )
    return {**started, "installed": installed}
