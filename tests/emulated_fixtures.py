"""Session fixtures for the emulated aarch64 board (loaded with `pytest_plugins`): its root filesystem, and the
board powered on and bootstrapped through the real command line (tracker, sshd, RPC server under qemu).

Where qemu cannot run here (no root for binfmt_misc, packages missing) the tests skip and say why; with
`EDGEPRUNE_REQUIRE_ARM=1` (CI sets it) they fail instead, so CI never passes without executing ARM code.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeprune.devices import emulation, loopback_sshd
from edgeprune.devices.base import Device
from edgeprune.devices.profile import load_device
from edgeprune.errors import EdgepruneError
from tests.loopback_board import edgeprune_main, write_emulated_profile


def _unavailable(reason: str) -> None:
    if os.environ.get("EDGEPRUNE_REQUIRE_ARM") == "1":
        pytest.fail(f"EDGEPRUNE_REQUIRE_ARM=1 but the emulated board cannot run: {reason}")
    pytest.skip(f"emulated aarch64 board unavailable: {reason}")


@pytest.fixture(scope="session")
def emulated_rootfs() -> emulation.RootFS:
    """The built root filesystem; built here when it is missing and this process may (root, tools present)."""
    problem = loopback_sshd.sshd_problem()
    if problem:
        _unavailable(problem)
    rootfs = emulation.default_rootfs()
    try:
        emulation.enable_binfmt()
        if not rootfs.is_built():
            if os.geteuid() != 0 or shutil.which("mmdebstrap") is None:
                _unavailable(f"root filesystem not built at {rootfs.path}; `{emulation.BUILD_COMMAND}` builds it")
            emulation.build_rootfs(rootfs)
    except EdgepruneError as exc:
        _unavailable(str(exc))
    return rootfs


@pytest.fixture(scope="session")
def emulated_pi(isolated_env: pytest.MonkeyPatch, emulated_rootfs: emulation.RootFS) -> Iterator[Device]:
    """The emulated Pi as a user starts it: `board emulate up`, then `board bootstrap` over SSH; stopped after."""
    profiles = Path(os.environ["EDGEPRUNE_PROFILES_DIR"])
    device = load_device(str(write_emulated_profile(profiles, "emulated-pi-test")))
    up = edgeprune_main("board", "emulate", "up", "--device", device.name, "--json")
    assert up.returncode == 0, up.stderr
    try:
        boot = edgeprune_main("board", "bootstrap", "--device", device.name, "--json")
        assert boot.returncode == 0, boot.stderr
        assert json.loads(boot.stdout)["machine"] == "aarch64"
        yield device
    finally:
        edgeprune_main("board", "stop", "--device", device.name)
        edgeprune_main("board", "emulate", "down", "--device", device.name)
