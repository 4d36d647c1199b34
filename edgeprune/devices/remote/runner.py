"""Ship `board_runner.py` to a board and call it there: the board needs Python, not an edgeprune install.

The script lands at `<remote_workdir>/.edgeprune/board_runner-<sha8>.py`: named by its content, so a board
keeps the copy matching each edgeprune version and an existing copy never needs re-checking.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.devices.base import Device
from edgeprune.devices.remote.ssh import COMMAND_TIMEOUT_S, BoardConnection
from edgeprune.errors import EdgepruneError

RUNNER_SOURCE = Path(__file__).with_name("board_runner.py")
STATE_DIR = ".edgeprune"
VENV = "venv"  # in the work dir: where `board setup` installs TVM's runtime when the board's Python lacks it


@dataclass(frozen=True)
class RemoteRunner:
    """The runner installed on one board, invoked with that board's Python."""

    conn: BoardConnection
    python: list[str]
    script: str
    workdir: str

    @property
    def state_dir(self) -> str:
        return posixpath.join(self.workdir, STATE_DIR)

    def call(self, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
        """Run one runner command; its last stdout line is JSON, `{"error": ...}` on failure."""
        words = [*self.python, self.script, *args]
        command = "TVM_USE_RUNTIME_LIB=1 " + " ".join(shlex.quote(w) for w in words)
        result = self.conn.run(command, timeout=timeout)
        lines = result.stdout.strip().splitlines()
        try:
            payload = json.loads(lines[-1]) if lines else None
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise EdgepruneError(
                f"the board runner on {self.conn.label} failed (exit {result.exit_code}): {args[0]}\n{tail}",
                hint=f"check that `{' '.join(self.python)}` runs on the board (remote.python in the profile)",
            )
        if "error" in payload:
            raise EdgepruneError(f"on {self.conn.label}, `{args[0]}` failed: {payload['error']}")
        return payload


def remote_workdir(conn: BoardConnection, device: Device) -> str:
    return conn.resolve(device.remote_workdir)


def venv_python(workdir: str) -> str:
    """The Python of the venv `board setup` makes in the work dir."""
    return posixpath.join(workdir, VENV, "bin", "python")


def board_python(conn: BoardConnection, device: Device, workdir: str) -> list[str]:
    """The venv's Python where `board setup` made one (it holds the TVM the profile's Python lacked), else the
    profile's `remote.python`."""
    venv = venv_python(workdir)
    if conn.exists(venv):
        return [venv]
    python = shlex.split(device.remote_python)
    if not python:
        raise EdgepruneError(f"device '{device.name}': remote.python is empty")
    return python


def install_runner(conn: BoardConnection, device: Device) -> RemoteRunner:
    """Upload the runner once per content (atomically: temp name, then rename) and return a handle to it."""
    source = RUNNER_SOURCE.read_bytes()
    workdir = remote_workdir(conn, device)
    state_dir = posixpath.join(workdir, STATE_DIR)
    script = posixpath.join(state_dir, f"board_runner-{hashlib.sha256(source).hexdigest()[:8]}.py")
    if not conn.exists(script):
        conn.makedirs(state_dir)
        partial = f"{script}.partial"
        conn.put(RUNNER_SOURCE, partial)
        conn.rename(partial, script)
    return RemoteRunner(conn=conn, python=board_python(conn, device, workdir), script=script, workdir=workdir)
