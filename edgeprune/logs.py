"""Where TVM's own output goes: a log file beside what a command writes, the terminal only when asked.

MetaSchedule prints its tuning table, every trial and the IR of every task through Python logging to stdout
(hundreds of lines for one small network). Tuning hands all of it to the `edgeprune.tvm` logger instead
(tvmx/tune.py); a command attaches a file to that logger for as long as it runs (`ep.run` its folder's
`logs/tvm.log`; the CLI's `profile` and `compile` a file beside their outputs), and `--verbose` the terminal too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

TVM_LOGGER = "edgeprune.tvm"
LOGS = "logs"  # a run folder's (or a profiles folder's) log folder
TVM_LOG = "tvm.log"


def tvm_logger() -> logging.Logger:
    return logging.getLogger(TVM_LOGGER)


@contextlib.contextmanager
def tvm_to(handler: logging.Handler) -> Iterator[None]:
    """`handler` on the TVM logger for the block (closed after), which passes INFO and up while one is attached,
    to its own handlers only: TVM's legalization calls `logging.info` on the root logger, which gives the root a
    terminal handler (logging.basicConfig) that would print every propagated tuning line. A logger that a user's
    `logging.config.dictConfig` disabled (its default disables every logger that exists then) is enabled for the
    block: the command asked for this log."""
    logger = tvm_logger()
    old, propagate, disabled = logger.level, logger.propagate, logger.disabled
    logger.setLevel(logging.INFO)  # the root's WARNING would drop MetaSchedule's INFO lines before any handler
    logger.propagate = False
    logger.disabled = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
        logger.propagate = propagate
        logger.disabled = disabled
        handler.close()


class _LazyFile(logging.FileHandler):
    """A log file created (with its folder) by its first record: a command refused on its input writes nothing,
    and one that tuned nothing leaves no empty log."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)

    def _open(self) -> TextIO:  # logging's hook: called at the first record (delay=True)
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


@contextlib.contextmanager
def tvm_log(path: Path) -> Iterator[Path]:
    """TVM's output of the block appended to `path`: a resumed run adds to its log."""
    handler = _LazyFile(path)
    handler.setFormatter(logging.Formatter("%(message)s"))  # MetaSchedule's lines carry their own time stamps
    with tvm_to(handler):
        yield path
