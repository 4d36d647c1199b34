"""What every CPU kind shares: TVM's `llvm` target, `cpu(0)` inside a session, SIMD lanes as the grid step."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.devices.base import Device

if TYPE_CHECKING:
    from tvm.rpc import RPCSession

# Tensor intrinsics of targets no CPU kind uses: registering them costs 34 of the 38 s it takes to import them all.
FOREIGN_TENSOR_INTRINSICS = ("cuda", "rocm", "hexagon")


class CPUDevice(Device):
    """A CPU reached through TVM RPC; shared by the `local` and `board` kinds."""

    @property
    def channel_step(self) -> int:
        """fp32 lanes of the widest SIMD unit: the natural channel granularity of tuned kernels."""
        if self.architecture in ("aarch64", "arm", "armv7"):
            return 4  # NEON: 128-bit
        flags = self.cpu_flags()
        if {"avx512f", "+avx512f"} & flags:
            return 16
        if {"avx2", "+avx2", "avx", "+avx"} & flags:
            return 8
        return 4

    def cpu_flags(self) -> set[str]:
        """The SIMD extensions the target names."""
        return set(self.target.get("mattr", []))

    def runtime_device(self, session: RPCSession) -> Any:
        return session.cpu(0)

    def prepare_tuning(self) -> None:
        """Every MetaSchedule TuneContext imports all of TVM's tensor intrinsics: 38 s on two cores, 34 s of it
        registering GPU and DSP ones that CPU targets never use. Empty stand-ins for those modules are registered
        first, in this process only; x86 and ARM intrinsics load."""
        if "tvm.s_tir.tensor_intrin" in sys.modules:
            return
        for name in FOREIGN_TENSOR_INTRINSICS:
            module = f"tvm.s_tir.tensor_intrin.{name}"
            sys.modules.setdefault(module, types.ModuleType(module, "not loaded by edgeprune: CPU targets only"))
        import tvm.s_tir.tensor_intrin  # noqa: F401 - registers the CPU intrinsics the schedule rules look up


def host_cpu_flags() -> set[str]:
    """This machine's CPU flags, from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
