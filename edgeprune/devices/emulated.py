"""The `emulated` kind: an aarch64 board (a Raspberry Pi 4 stand-in) that runs on this machine under qemu-user.

Every shipped profile targets aarch64, yet no x86 machine could execute what `compile` cross-compiles for them.
This kind is reached exactly like a board (tracker, key, SSH, the board runner, SFTP upload); only its CPU is
emulated, so it proves the ARM plumbing (the cross-compiled library loads and computes PyTorch's numbers, tuning
over RPC, deploy) and never a board's speed: `timings_are_real` is False and every printed or stored latency
of it is labelled emulated.

What is machine-specific (the user SSH logs in as, the key and known_hosts in edgeprune's state dir, the
wrapper in the user's cache) cannot live in a checked-in profile: where a profile leaves `[ssh]` or
`[remote]` out, the board's own are used. A profile that names them (the tests' loopback board) keeps its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
from collections.abc import Iterator
from typing import Any

from edgeprune.devices import emulated_board, emulation
from edgeprune.devices.base import Device, SSHConfig, register
from edgeprune.devices.board import BoardDevice
from edgeprune.devices.remote import server
from edgeprune.errors import EdgepruneError

EMULATED = "emulated"
DEFAULT_REMOTE = ("~/edgeprune", "python3")  # what a profile without `[remote]` gets from the parser


@register(EMULATED)
@dataclasses.dataclass(frozen=True)
class EmulatedDevice(BoardDevice):
    """An aarch64 Debian user space with TVM's runtime, run through qemu-user on loopback."""

    timings_are_real = False
    shares_host_cores = True  # qemu runs on this machine's cores: a build here would slow a measurement there

    def __post_init__(self) -> None:
        home = emulated_board.BoardHome(self.name)
        if self.ssh is None:
            ssh = SSHConfig(
                host="127.0.0.1",
                user=getpass.getuser(),
                port=self.tracker_port + emulated_board.SSH_PORT_OFFSET,
                key_file=str(home.sshd.client_key),
                known_hosts=str(home.sshd.known_hosts),
            )
            object.__setattr__(self, "ssh", ssh)
        if self.remote_workdir == DEFAULT_REMOTE[0]:
            object.__setattr__(self, "remote_workdir", str(home.workdir))
        if self.remote_python == DEFAULT_REMOTE[1]:
            object.__setattr__(self, "remote_python", str(emulation.default_rootfs().python))

    def check_toolchain(self) -> None:
        """The cross compiler, then the board itself: its root filesystem must be built before anything runs."""
        super().check_toolchain()
        emulation.require_rootfs()

    @contextlib.contextmanager
    def serving(self, servers: int = 1) -> Iterator[Device]:
        """The board powered on (tracker, sshd) and its RPC server bootstrapped over SSH when the tracker lists
        none under the key; what this block started is stopped after it, what already ran is left running."""
        with emulated_board.powered(self):
            if server.registered(self) > 0:
                yield self
                return
            started = server.bootstrap(self)
            try:
                yield self
            finally:
                if not started["already_running"]:
                    with contextlib.suppress(EdgepruneError):
                        server.stop(self)

    def health(self) -> dict[str, Any]:
        """Nothing of a board's: its timings are qemu's on this machine, not a board's."""
        return {"read_from": None, "unknown": "an emulated board: its timings are not a board's (qemu on this host)"}

    def start_hint(self) -> str:
        return (
            f"`edgeprune board emulate up --device {self.name}` then `edgeprune board bootstrap --device "
            f"{self.name}` (the root filesystem first: `{emulation.BUILD_COMMAND}`)"
        )
