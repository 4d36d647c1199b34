"""TVM's native stderr, filtered: exporting a tuned library logs a line per function that says nothing useful."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

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
