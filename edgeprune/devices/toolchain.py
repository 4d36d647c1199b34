"""How code built for a device is linked: natively, with its cross compiler, or as a `.tar` the board links."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeprune.devices.profile import DeviceProfile
from edgeprune.errors import EdgepruneError


def library_name(device: DeviceProfile, stem: str = "model") -> str:
    """`.so` when this host can link for the device, else `.tar` (the board's RPC server links it)."""
    if device.is_cross and not device.cross_compiler:
        return f"{stem}.tar"
    return f"{stem}.so"


def tvm_target(device: DeviceProfile) -> Any:
    import tvm

    return tvm.target.Target(dict(device.target))


def export(lib: Any, directory: Path, device: DeviceProfile, stem: str = "model") -> Path:
    """Export a built TVM module for `device` into `directory`; returns the library path."""
    path = Path(directory) / library_name(device, stem)
    with without_native_lines(NOISE):
        _export(lib, path, device)
    return path


# TVM's C++ runtime logs one of these per tuned function when it saves an executable: dozens of lines that say
# nothing a user can act on.
NOISE = "Warning: Scope Saving"
_FD2 = threading.Lock()  # fd 2 is process-wide: one capture at a time, or a restore could put back another's


@contextlib.contextmanager
def without_native_lines(marker: str) -> Iterator[None]:
    """Capture file descriptor 2 (where TVM's C++ logging writes) for the block; pass on every line without
    `marker`."""
    with _FD2, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if marker not in line)
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _export(lib: Any, path: Path, device: DeviceProfile) -> None:
    import tvm.support

    if path.suffix == ".tar":
        lib.export_library(str(path), fcompile=tvm.support.tar.tar)
    elif device.is_cross:
        compiler = device.cross_compiler or ""
        if shutil.which(compiler) is None:
            raise EdgepruneError(
                f"cross compiler '{compiler}' for device '{device.name}' is not installed",
                hint="on Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu",
            )
        lib.export_library(str(path), fcompile=tvm.support.cc.cross_compiler(compiler))
    else:
        lib.export_library(str(path))
