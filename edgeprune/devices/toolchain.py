"""How code built for a device is linked: natively, with its cross compiler, or as a `.tar` the board links."""

from __future__ import annotations

import shutil
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
    import tvm.support

    path = Path(directory) / library_name(device, stem)
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
    return path
