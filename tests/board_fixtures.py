"""Session fixtures for deploy/board tests (loaded with `pytest_plugins`): the loopback sshd, a tiny artifact."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback_board import SSHServer, build_tiny_artifact, sshd_available, start_sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A real OpenSSH sshd on 127.0.0.1 for the whole session; skipped only where sshd cannot run."""
    reason = sshd_available()
    if reason:
        pytest.skip(reason)
    server, proc = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_artifact(tmp_path_factory.mktemp("artifacts") / "tiny")
