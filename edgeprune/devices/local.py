"""The built-in `local` kind: this machine's CPU behind a real TVM RPC tracker and server on 127.0.0.1.

The same code path as a board (tracker, key, session, upload), with servers edgeprune starts itself: any
command given `--device local` uses a running farm or starts one for its own duration.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeprune.devices.base import Device, register
from edgeprune.devices.builtin import LOCAL, LOCAL_DEFAULT_PORT
from edgeprune.devices.cpu import CPUDevice, host_cpu_flags


class OnThisMachine(Device):
    """What the built-in devices share: servers on this machine, in a loopback farm edgeprune starts itself."""

    shares_host_cores = True

    @property
    def needs_cross_link(self) -> bool:
        return False

    @contextlib.contextmanager
    def serving(self, servers: int = 1) -> Iterator[Device]:
        """Use a running farm, else start one (tracker + `servers` servers) for the duration of the block."""
        from edgeprune.devices import farm

        with farm.ensure_farm(self, servers):
            yield self

    def start_hint(self) -> str:
        return f"`edgeprune farm up --port {self.tracker_port} --key {self.key}`"

    def health(self) -> dict[str, Any]:
        """This machine's own sysfs: its servers run here."""
        from edgeprune.devices import health

        return health.this_machine()


@register(LOCAL)
class LocalDevice(OnThisMachine, CPUDevice):
    """This CPU through the loopback farm."""

    runs_on_host = True

    def cpu_flags(self) -> set[str]:
        return host_cpu_flags()  # LLVM's CPU name implies them; the target lists none


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def host_target() -> dict[str, Any]:
    """TVM target of this machine's CPU; LLVM's own name for it, so tuned code uses every extension."""
    from tvm.target import codegen  # deferred: importing TVM costs seconds

    return {"kind": "llvm", "mcpu": str(codegen.llvm_get_system_cpu()), "num-cores": available_cores()}


def local_device(profiles_root: Path, port: int = LOCAL_DEFAULT_PORT, key: str = LOCAL) -> LocalDevice:
    """The built-in device on a tracker at 127.0.0.1:`port`."""
    return LocalDevice(
        name=LOCAL,
        description="This machine's CPU, through a local TVM RPC farm on 127.0.0.1",
        target=host_target(),
        tracker_host="127.0.0.1",
        tracker_port=port,
        key=key,
        profiles_root=profiles_root,
    )
