"""Atomic writes: a reader (or an interrupted run) never sees half a LUT, manifest, model or artifact folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path` with one rename, else it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; the result gets the usual permissions
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temp sibling and rename it into place; an existing folder is replaced whole."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _holder(fd: int) -> str:
    """Who holds the lock file open at `fd`, as its holder wrote it: 'pid N (`command`) since TIME'."""
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace").strip() or "another process"


def lock_holder(lock: Path) -> str | None:
    """Who holds `lock` now (see `sole_writer`), None when nobody does."""
    import fcntl

    if not lock.exists():
        return None
    fd = os.open(lock, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def sole_writer(
    lock: Path, busy: Exception, on_wait: Callable[[str], None] | None = None, poll_s: float = 0.2
) -> Iterator[None]:
    """Hold an exclusive lock on the file `lock` for the block (a table or database written by two processes at
    a time would lose one side's records). When another process holds it: raise `busy` at once, or, given
    `on_wait`, tell it who holds the lock (once) and wait for it. The holder writes who it is into the file,
    so a waiting process can say for whom it waits."""
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if on_wait is None:
                    raise busy from exc
                if not told:
                    on_wait(_holder(fd))
                    told = True
                time.sleep(poll_s)  # polled, not blocking: Ctrl-C stays immediate
        command = " ".join(sys.argv) or sys.executable
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} (`{command}`) since {since}".encode(), 0)
        yield
    finally:
        os.close(fd)
