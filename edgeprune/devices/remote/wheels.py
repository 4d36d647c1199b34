"""The TVM runtime's wheels for a board, fetched on THIS machine: boards in labs and factories are often offline.

pip downloads them here for the board's platform (every `manylinux_<glibc>_<machine>` tag its glibc runs, its Python
version, CPython, binary wheels only) into `<cache>/board-wheels/<platform>-cp<XY>/`, once; `board setup` then
uploads them by SFTP. The versions are this machine's own: RPC and compiled libraries need one TVM release on both
sides, so the board gets exactly what this machine runs.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgeprune import atomic
from edgeprune.errors import EdgepruneError
from edgeprune.paths import user_cache_dir

DOWNLOAD_TIMEOUT_S = 1800.0
MANYLINUX2014_GLIBC = 17  # manylinux2014 is glibc 2.17: the oldest tag TVM's wheels and their dependencies use
DONE = "requirements.txt"  # written last: a folder without it is an interrupted download, fetched again


INSTALLER = "pip"  # fetched beside them: run from its wheel, it installs them on a board whose Python has no pip


def runtime_requirements() -> list[str]:
    """What a board's Python needs to serve RPC and run compiled models: this machine's TVM release and its FFI."""
    tvm, ffi = (metadata.version(name) for name in ("apache-tvm", "apache-tvm-ffi"))
    return [f"apache-tvm[rpc]=={tvm}", f"apache-tvm-ffi=={ffi}"]


@dataclass(frozen=True)
class BoardPlatform:
    """What pip must know about a board to choose its wheels, as the board's own Python reports it."""

    machine: str  # `aarch64`, `x86_64`
    python: str  # `3.11.2`
    glibc: str  # `2.36`

    @property
    def python_tag(self) -> str:
        """`311` for Python 3.11.x."""
        major, minor = self.python.split(".")[:2]
        return f"{major}{minor}"

    @property
    def pip_platforms(self) -> list[str]:
        """Every manylinux tag the board's glibc runs, newest first: pip takes `--platform` literally (only the
        legacy `manylinux2014` stands for the older tags too), and each wheel carries one or two of them."""
        major, minor = (int(part) for part in self.glibc.split(".")[:2])
        if (major, minor) < (2, MANYLINUX2014_GLIBC):
            raise EdgepruneError(f"the board's glibc {self.glibc} is older than any TVM wheel supports (2.17)")
        newest = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, MANYLINUX2014_GLIBC - 1, -1)]
        return [*newest, f"manylinux2014_{self.machine}"]

    @property
    def name(self) -> str:
        return f"{self.pip_platforms[0]}-cp{self.python_tag}"

    @classmethod
    def from_probe(cls, info: dict[str, str]) -> BoardPlatform:
        """From the board runner's `probe`; a board without glibc (musl, Android) has no manylinux wheels."""
        if not info.get("glibc"):
            raise EdgepruneError(
                f"the board's Python ({info.get('executable')}) reports no glibc: TVM's wheels are built for glibc "
                "Linux (manylinux) only",
                hint="install TVM's runtime on the board by hand, or use a glibc Linux (Debian, Raspberry Pi OS)",
            )
        return cls(machine=info["machine"], python=info["python"], glibc=info["glibc"])


def wheel_folder(board: BoardPlatform) -> Path:
    return user_cache_dir() / "board-wheels" / board.name


def fetch(board: BoardPlatform, requirements: list[str] | None = None) -> list[Path]:
    """The wheels of `requirements` (default: TVM's runtime) and pip for the board, in this machine's cache,
    downloaded the first time; returns their paths.

    The folder is complete only once its requirements file is written, after pip succeeded: an interrupted
    download is resumed by pip (the wheels it already has are kept), never taken for a finished one."""
    wanted = [*(runtime_requirements() if requirements is None else requirements), INSTALLER]
    folder = wheel_folder(board)
    done = folder / DONE
    if not done.is_file() or done.read_text().split() != wanted:
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            *(option for platform in board.pip_platforms for option in ("--platform", platform)),
            "--python-version",
            board.python_tag,
            "--implementation",
            "cp",
            "--dest",
            str(folder),
            *wanted,
        ]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise EdgepruneError(f"downloading the board's wheels took over {DOWNLOAD_TIMEOUT_S:.0f} s") from exc
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
            raise EdgepruneError(
                f"pip could not download TVM's wheels for {board.name} here:\n{tail}",
                hint="this machine needs a package index (PyPI, or a mirror in pip's configuration); the board none",
            )
        atomic.write_text(done, "\n".join(wanted) + "\n")
    return sorted(folder.glob("*.whl"))
