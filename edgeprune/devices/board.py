"""The `board` kind: a CPU board (Raspberry Pi, a Jetson's ARM cores) whose RPC server registers with a tracker.

Its code is cross-compiled when its triple is not this host's; its server is started on the board by
`edgeprune board bootstrap` over SSH.
"""

from __future__ import annotations

from edgeprune.devices.base import register
from edgeprune.devices.cpu import CPUDevice


@register("board")
class BoardDevice(CPUDevice):
    """An RPC board reached through a tracker; code cross-compiled when its triple is not the host's."""
