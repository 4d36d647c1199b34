"""Which CPU a compiled library is for, read from its ELF header: the one table of architecture -> e_machine.

A library built for another CPU than the board's fails on it in an obscure way (or not at all on a `.tar`, which
the board links itself and which has no ELF header here); the Device asks this module before anything runs.
"""

from __future__ import annotations

import struct
from pathlib import Path

MACHINES = {"x86_64": 62, "aarch64": 183, "arm": 40}  # ELF e_machine by architecture (prefix of the triple's)


def machine_of(architecture: str) -> int | None:
    """The e_machine of code for `architecture` (`armv7` is `arm`), or None for one the table lacks."""
    return next((code for arch, code in MACHINES.items() if architecture.startswith(arch)), None)


def machine_name(code: int) -> str:
    """The architecture that `code` names, as the table spells it."""
    return next((arch for arch, known in MACHINES.items() if known == code), f"ELF machine {code}")


def read_machine(path: Path) -> int | None:
    """The ELF header's e_machine (62 x86-64, 183 AArch64), or None when `path` is not an ELF file."""
    with open(path, "rb") as fh:
        header = fh.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    byte_order = "<" if header[5] == 1 else ">"
    return int(struct.unpack(f"{byte_order}H", header[18:20])[0])
