"""A loopback "board" for deploy tests: a real OpenSSH sshd on 127.0.0.1, a device profile pointing at it,
and a real (tiny) TVM artifact folder to deploy. The pytest fixtures built on these are in board_fixtures.py.

The board's Python is a wrapper script that logs `$SSH_CONNECTION` before exec'ing this venv's Python:
sshd sets that variable only in sessions it serves, so the log proves a command ran through SSH.
"""

from __future__ import annotations

import contextlib
import gc
import getpass
import hashlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeprune.devices import loopback_sshd
from tests.conftest import SHIPPED_PROFILES, free_port

BOARD_NAME = "loopback-board"
EMULATED_PI = "emulated-pi"


@dataclass(frozen=True)
class SSHServer:
    port: int
    user: str
    client_key: Path  # authorized on the server
    host_key_pub: Path
    fingerprint: str  # as `ssh-keygen -lf` prints it, computed by OpenSSH itself
    log: Path


def sshd_available() -> str | None:
    """Why the loopback sshd cannot run here, or None when it can."""
    problem = loopback_sshd.sshd_problem()
    return problem and f"{problem}; `make test` installs it"


@dataclass(frozen=True)
class Board:
    """One test's board: its profile file, its folders, and the log of commands run through SSH."""

    profile: Path
    workdir: Path
    known_hosts: Path
    ssh_log: Path


def start_sshd(folder: Path) -> tuple[SSHServer, subprocess.Popen[bytes]]:
    """Start sshd -D on a free loopback port, as the current user, accepting one generated key."""
    files = loopback_sshd.prepare(folder)
    files.known_hosts.unlink(missing_ok=True)  # tests decide themselves whether the host key is trusted
    for _attempt in range(3):  # the free port can be taken between choosing and binding it
        port = free_port()
        try:
            proc = loopback_sshd.start(files, port)
        except OSError:
            continue
        files.known_hosts.unlink(missing_ok=True)
        server = SSHServer(
            port=port,
            user=getpass.getuser(),
            client_key=files.client_key,
            host_key_pub=files.host_key.with_suffix(".pub"),
            fingerprint=files.fingerprint(),
            log=files.log,
        )
        return server, proc
    raise RuntimeError(f"sshd did not start; its log:\n{files.log.read_text()}")


def board_python(folder: Path, python: str = sys.executable) -> tuple[Path, Path]:
    """A wrapper the profile names as the board's Python; it logs `$SSH_CONNECTION` and the arguments."""
    log = folder / "board-python.log"
    wrapper = folder / "board-python"
    wrapper.write_text(f'#!/bin/sh\necho "ssh=[$SSH_CONNECTION] $*" >> "{log}"\nexec "{python}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, log


def write_board_profile(
    folder: Path,
    server: SSHServer,
    *,
    tracker_port: int = 9,
    key: str = BOARD_NAME,
    key_file: Path | None = None,
    trusted: bool = True,
    python: str = sys.executable,
    target: dict[str, object] | None = None,
    timing: dict[str, int] | None = None,
) -> Board:
    """A device profile for the loopback board; `trusted` pre-records the sshd host key in its known_hosts.

    With `tracker_port` and `key` of the local farm and this machine's `target`, the board is this machine's
    CPU behind both RPC and SSH: a whole `run`, deploy included, on loopback. `timing` is its `[timing]` table."""
    folder.mkdir(parents=True, exist_ok=True)
    known_hosts = folder / "known_hosts"
    if trusted:
        kind, blob = server.host_key_pub.read_text().split()[:2]
        known_hosts.write_text(f"[127.0.0.1]:{server.port} {kind} {blob}\n")
    wrapper, log = board_python(folder, python)
    workdir = folder / "board-home" / "edgeprune"
    key_line = f'key_file = "{key_file}"' if key_file else ""
    target_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in (target or {"kind": "llvm"}).items())
    profile = folder / f"{BOARD_NAME}.toml"
    profile.write_text(
        f"""name = "{BOARD_NAME}"
description = "sshd on 127.0.0.1 standing in for a board"

[target]
{target_lines}

[tracker]
host = "127.0.0.1"
port = {tracker_port}
key = "{key}"

[ssh]
host = "127.0.0.1"
port = {server.port}
user = "{server.user}"
{key_line}
known_hosts = "{known_hosts}"

[remote]
workdir = "{workdir}"
python = "{wrapper}"
"""
        + ("\n[timing]\n" + "".join(f"{k} = {v}\n" for k, v in timing.items()) if timing else "")
    )
    return Board(profile=profile, workdir=workdir, known_hosts=known_hosts, ssh_log=log)


def build_tiny_artifact(folder: Path) -> Path:
    """A real artifact: a tiny CNN, exported to ONNX, compiled by TVM Relax for `llvm`, with its manifest."""
    import numpy as np
    import onnx
    import torch
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10)
    ).eval()
    onnx_path = folder / "model.onnx"
    torch.onnx.export(
        model, (torch.zeros(1, 1, 8, 8),), str(onnx_path), dynamo=False, input_names=["input"], output_names=["out"]
    )
    executable = tvm.compile(
        from_onnx(onnx.load(str(onnx_path)), keep_params_in_input=False), target=tvm.target.Target({"kind": "llvm"})
    )
    executable.export_library(str(folder / "model.so"))
    reference = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        np.save(folder / "reference_input.npy", reference.numpy())
        np.save(folder / "reference_output.npy", model(reference).numpy())
    names = ("model.so", "model.onnx", "reference_input.npy", "reference_output.npy")
    files = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}
    manifest = {
        "format": "edgeprune-artifact",
        "version": 1,
        "library": "model.so",
        "onnx": "model.onnx",
        "input": {"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"},
        "output": {"shape": [1, 10], "dtype": "float32"},
        "target": {"kind": "llvm"},
        "device": BOARD_NAME,
        "tvm_version": tvm.__version__,
        "tuning": {"trials": 0},
        "source_model": {"arch": "tiny-test-cnn"},
        "pruning": None,
        "predicted_ms": None,
        "files": files,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def edgeprune_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process (inherits the test's isolated environment). For long commands
    (`run`, `compile`) and those that change process-wide state; `edgeprune_main` for the quick ones."""
    return subprocess.run(
        [sys.executable, "-m", "edgeprune", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def write_emulated_profile(folder: Path, name: str = EMULATED_PI, port: int | None = None) -> Path:
    """The shipped emulated-pi profile under another name and tracker port (default a free one; its sshd gets
    port + 2), so a test's board never meets the user's."""
    text = (SHIPPED_PROFILES / f"{EMULATED_PI}.toml").read_text()
    text = text.replace(f'name = "{EMULATED_PI}"', f'name = "{name}"')
    text = text.replace("port = 9390", f"port = {port or free_port()}")
    text = text.replace(f'key = "{EMULATED_PI}"', f'key = "{name}"')
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def edgeprune_main(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line run in this process: the `main` the console script calls, its exit code, what it printed
    on stdout and stderr. A child process would first spend 4-6 s importing torch and TVM, for commands (status,
    check, bootstrap, deploy, verify) that take about as long themselves."""
    from edgeprune.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as done:
            code = done.code
    gc.collect()  # an RPC session the command left unreferenced closes now, as at a child's exit: its server is free
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(["edgeprune", *args], returncode, out.getvalue(), err.getvalue())
