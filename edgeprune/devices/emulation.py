"""The emulated board's root filesystem: an arm64 Debian user space with the aarch64 TVM wheels, run by qemu-user.

Every device profile targets aarch64, so an aarch64 board that runs on any x86 machine lets CI execute what
`compile` cross-compiles. The root filesystem is built once by `edgeprune board emulate build` into the user's
cache (never into git: it is about 360 MB) and reused; a build goes to a temporary folder that is renamed into
place only when the emulated Python has imported TVM, so an interrupted build never looks finished.

Its `bin/python` is a wrapper that runs the board's Python through binfmt_misc with `QEMU_LD_PREFIX` set: the
RPC server re-executes `sys.executable` for its workers, which only binfmt (not `qemu -L`) follows.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError
from edgeprune.paths import user_cache_dir

SUITE = "bookworm"
BOARD_PYTHON = "python3.11"  # bookworm's Python; the wheels below are chosen for it
# The board runs what this host runs: RPC across TVM versions is not supported.
BOARD_WHEELS = ("apache-tvm[rpc]==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")  # the TVM wheel needs the first
# Libraries a runtime-only board never loads (the compiler and CUDA runtime): 591 -> 362 MB.
UNUSED_LIBS = ("libtvm_compiler.so", "libtvm_runtime_cuda.so")
BUILD_COMMAND = "edgeprune board emulate build"
QEMU_BINFMT = "qemu-aarch64"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
STAMP = "edgeprune-rootfs.json"
APT_HINT = (
    "as root: apt-get install qemu-user-static binfmt-support && "
    "apt-get install --no-install-recommends mmdebstrap arch-test"
)


def rootfs_name() -> str:
    """The folder name says what is inside, so a change of suite or wheels builds a new root beside the old."""
    tvm = BOARD_WHEELS[0].split("==")[1]
    return f"arm64-{SUITE}-tvm{tvm}"


@dataclass(frozen=True)
class RootFS:
    """A built (or to-be-built) arm64 root filesystem and the paths the emulated board uses inside it."""

    path: Path

    @property
    def python(self) -> Path:
        """The wrapper that runs the board's Python under qemu: a profile's `remote.python`."""
        return self.path / "edgeprune-bin" / "python"

    @property
    def site_packages(self) -> Path:
        return self.path / "usr" / "local" / "lib" / BOARD_PYTHON / "dist-packages"

    @property
    def stamp(self) -> Path:
        return self.path / STAMP

    def is_built(self) -> bool:
        return self.stamp.is_file() and self.python.is_file()

    def info(self) -> dict[str, Any]:
        """What the build recorded (versions, size, seconds taken)."""
        return json.loads(self.stamp.read_text())


def default_rootfs() -> RootFS:
    return RootFS(user_cache_dir() / "emulated" / rootfs_name())


def require_rootfs(rootfs: RootFS | None = None) -> RootFS:
    """The built root filesystem, or a clear error naming the command that builds it."""
    rootfs = rootfs or default_rootfs()
    if not rootfs.is_built():
        raise EdgepruneError(
            f"the emulated board's root filesystem is not built (looked in {rootfs.path})",
            hint=f"`{BUILD_COMMAND}` (once, 5-6 minutes and 350 MB; needs root for binfmt_misc)",
        )
    return rootfs


# -- qemu through binfmt_misc ----------------------------------------------------------------------------------
def _binfmt_entry() -> Path:
    return BINFMT_DIR / QEMU_BINFMT


def binfmt_problem() -> str | None:
    """Why aarch64 binaries cannot run here through binfmt_misc, or None when they can."""
    if platform.machine() == "aarch64":
        return None
    entry = _binfmt_entry()
    if not entry.exists():
        if shutil.which("update-binfmts") is None or shutil.which("qemu-aarch64-static") is None:
            return f"qemu-user-static and binfmt-support are not installed ({APT_HINT})"
        if not (BINFMT_DIR / "register").exists():
            return f"binfmt_misc is not mounted (as root: mount -t binfmt_misc binfmt_misc {BINFMT_DIR})"
        return f"binfmt_misc has no {QEMU_BINFMT} entry (as root: update-binfmts --enable {QEMU_BINFMT})"
    if entry.read_text().splitlines()[0].strip() != "enabled":
        return f"binfmt_misc's {QEMU_BINFMT} entry is disabled (as root: update-binfmts --enable {QEMU_BINFMT})"
    return None


def enable_binfmt() -> None:
    """Mount binfmt_misc and enable qemu-aarch64 where that is missing (root only); a clear error otherwise.

    The kernel setting is per machine and lost at reboot, so every command that starts the board calls this."""
    if binfmt_problem() is None:
        return
    if os.geteuid() != 0:
        raise EdgepruneError(f"aarch64 binaries cannot run here: {binfmt_problem()}", hint="run once as root")
    if shutil.which("update-binfmts") is None:
        raise EdgepruneError("qemu-user-static and binfmt-support are not installed", hint=APT_HINT)
    if not (BINFMT_DIR / "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], "mounting binfmt_misc")
    _run(["update-binfmts", "--enable", QEMU_BINFMT], f"enabling binfmt {QEMU_BINFMT}")
    problem = binfmt_problem()
    if problem:
        raise EdgepruneError(f"aarch64 binaries still cannot run here: {problem}")


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise EdgepruneError(f"{what} failed (exit {proc.returncode}): {' '.join(command)}\n{tail}")
    return proc.stdout


# -- building ----------------------------------------------------------------------------------------------------
def wrapper_text(root: Path) -> str:
    """The board's Python: qemu (through binfmt) finds the root's loader and libraries via `QEMU_LD_PREFIX`,
    which child processes inherit; `TVM_USE_RUNTIME_LIB` makes `import tvm` load the runtime only (1.6 s
    instead of 5 s under emulation), as on a board."""
    return (
        "#!/bin/sh\n"
        "# The emulated board's Python (edgeprune): aarch64 Debian under qemu-user.\n"
        f'export QEMU_LD_PREFIX="{root}"\n'
        "export TVM_USE_RUNTIME_LIB=${TVM_USE_RUNTIME_LIB-1}\n"
        f'exec "{root}/usr/bin/{BOARD_PYTHON}" "$@"\n'
    )


def _mirror() -> str:
    """This machine's Debian sources when it has them (same mirror, same snapshot), else Debian's mirror."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    return str(sources) if sources.is_file() else "http://deb.debian.org/debian"


def _probe(rootfs: RootFS) -> dict[str, str]:
    """Run the built board's Python: proves the root works and records what it has."""
    code = (
        "import json, platform, numpy, tvm; "
        "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), "
        "'numpy': numpy.__version__, 'tvm': tvm.__version__}))"
    )
    out = _run([str(rootfs.python), "-c", code], "importing TVM on the emulated board")
    info: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    if info["machine"] != "aarch64":
        raise EdgepruneError(f"the emulated board's Python reports machine {info['machine']}, not aarch64")
    return info


def _compile_bytecode(rootfs: RootFS, final: RootFS) -> None:
    """Write the wheels' .pyc files now: without them the board compiles TVM's Python on every import (18 s
    instead of 5 s under qemu), since it cannot write them when `PYTHONDONTWRITEBYTECODE` is set or the cache
    is read-only. Bytecode is the same on every architecture, so this host's Python does it (natively, 10x
    faster) when it is the board's version; else the board's own Python does. Tracebacks name `final`'s paths."""
    board_version = tuple(int(p) for p in BOARD_PYTHON.removeprefix("python").split("."))
    python = sys.executable if sys.version_info[:2] == board_version else str(rootfs.python)
    rename = ["-s", str(rootfs.path), "-p", str(final.path)]
    _run([python, "-m", "compileall", "-q", "-j", "0", *rename, str(rootfs.site_packages)], "compiling bytecode")


def build_rootfs(rootfs: RootFS | None = None, log: Any = print) -> dict[str, Any]:
    """Build the root filesystem unless it is built already; returns its recorded info (`built`: False when
    it was there). Steps: mmdebstrap (arm64, python3) -> pip the aarch64 wheels in from this host -> wrapper
    -> import TVM under emulation -> rename into place."""
    rootfs = rootfs or default_rootfs()
    if rootfs.is_built():
        return {**rootfs.info(), "built": False, "path": str(rootfs.path)}
    if shutil.which("mmdebstrap") is None:
        raise EdgepruneError("'mmdebstrap' is not installed", hint=APT_HINT)
    enable_binfmt()
    started = time.monotonic()
    staging = RootFS(rootfs.path.with_name(rootfs.path.name + ".partial"))
    if staging.path.exists():
        shutil.rmtree(staging.path)
    staging.path.parent.mkdir(parents=True, exist_ok=True)
    try:
        log(f"debootstrapping arm64 {SUITE} into {staging.path}")
        _run(
            [
                "mmdebstrap",
                "--quiet",
                "--arch=arm64",
                "--variant=essential",
                "--include=python3,libstdc++6",
                SUITE,
                str(staging.path),
                _mirror(),
            ],
            "mmdebstrap",
        )
        log("installing the aarch64 wheels: " + " ".join(BOARD_WHEELS))
        version = BOARD_PYTHON.removeprefix("python")
        platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
        _run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
            + ["--target", str(staging.site_packages), *platforms, "--only-binary=:all:"]
            + ["--python-version", version, "--implementation", "cp", *BOARD_WHEELS],
            "pip install of the aarch64 wheels",
        )
        for name in UNUSED_LIBS:
            (staging.site_packages / "tvm" / "lib" / name).unlink(missing_ok=True)
        # The wrapper names its final path: write it for the final location, probe through a staging copy.
        staging.python.parent.mkdir(parents=True, exist_ok=True)
        staging.python.write_text(wrapper_text(staging.path))
        staging.python.chmod(0o755)
        log("compiling the wheels' bytecode")
        _compile_bytecode(staging, rootfs)
        log("importing TVM on the emulated board")
        probe = _probe(staging)
        staging.python.write_text(wrapper_text(rootfs.path))
        info = {
            **probe,
            "suite": SUITE,
            "wheels": list(BOARD_WHEELS),
            "build_seconds": round(time.monotonic() - started, 1),
            "size_mb": round(_size(staging.path) / 1e6),
        }
        staging.stamp.write_text(json.dumps(info, indent=2) + "\n")
        if rootfs.path.exists():  # a half-removed root without a stamp
            shutil.rmtree(rootfs.path)
        staging.path.rename(rootfs.path)
    except BaseException:
        shutil.rmtree(staging.path, ignore_errors=True)
        raise
    return {**info, "built": True, "path": str(rootfs.path)}


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
