"""The `cuda` kind: an NVIDIA GPU (a Jetson's), and the built-in `local-gpu` (this machine's GPU, loopback farm).

Its TVM target is `cuda` with the GPU's `arch` and a `host` (the CPU that runs the Relax VM: aarch64 on a
Jetson). Untuned builds get TVM's default GPU schedules: `tvm.compile` picks the CUDA Relax pipeline for a
`cuda` target, whose dlight rules (matmul, GEMV, reductions, fallback) bind every kernel to threads. Tuning
uses MetaSchedule's `cuda` schedule rules, which a `cuda` target selects by itself.

Device code is compiled here, without a GPU, by NVIDIA's `nvcc`. TVM 0.27 leaves the kernels of a CUDA module
as CUDA C++ when this process has no CUDA runtime (no driver), to be compiled when the library is loaded, which
a Jetson's runtime-only TVM cannot do; `pack_imports` therefore compiles them into a fatbin (SASS for the arch
plus its PTX) while `export_library` embeds the modules, so the shipped library holds machine code for the
board's GPU. Where this process does have a CUDA runtime, TVM has compiled the kernels itself and they are
embedded as they are.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.devices.base import Device, register
from edgeprune.devices.builtin import LOCAL_GPU, LOCAL_GPU_DEFAULT_PORT
from edgeprune.devices.local import OnThisMachine, host_target
from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    from tvm.rpc import RPCSession

CUDA = "cuda"
DEVICE_CODE_FORMAT = "fatbin"  # SASS for the arch and its PTX in one image: cuModuleLoadData takes it as is
NVCC_HINT = (
    "pip install 'edgeprune[cuda]' (NVIDIA's nvcc 13.0 from PyPI: nvidia-cuda-nvcc and the headers it needs), "
    "or set CUDA_PATH to a CUDA toolkit"
)
# Keys a `[target.host]` table may hold: the CPU that runs the Relax VM and launches the kernels.
HOST_KEYS: dict[str, type] = {"kind": str, "mtriple": str, "mcpu": str, "mattr": list, "num-cores": int}
ARCH = re.compile(r"sm_(\d+)[af]?")
_CUDA_MODULE = b"cuda"
_SOURCE_FORMAT = b"cuda"


def _u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def _string(data: bytes) -> bytes:
    """TVM's serialized string: its length as a little-endian u64, then the bytes."""
    return _u64(len(data)) + data


@dataclass(frozen=True)
class Nvcc:
    """An `nvcc` and the compute capabilities it compiles for."""

    path: Path
    release: str
    capabilities: frozenset[int]

    def check_arch(self, arch: str) -> None:
        """Fail when this nvcc cannot compile for `arch`, naming what it can."""
        if _capability(arch) not in self.capabilities:
            known = ", ".join(f"sm_{c}" for c in sorted(self.capabilities))
            raise EdgepruneError(
                f"nvcc {self.release} ({self.path}) cannot compile for {arch} (it compiles for {known})",
                hint="CUDA 13 dropped sm_50 to sm_72 (Jetson Nano, TX2, Xavier): those need CUDA 12 or older, "
                "whose code this TVM's CUDA runtime (built on CUDA 13) cannot load",
            )

    def fatbin(self, source: str, arch: str) -> bytes:
        """CUDA C++ compiled for `arch`: SASS and PTX in an uncompressed fatbin (so its arch can be read back)."""
        number = _capability(arch)
        with tempfile.TemporaryDirectory(prefix="edgeprune-nvcc-") as folder:
            cu, out = Path(folder) / "kernels.cu", Path(folder) / "kernels.fatbin"
            cu.write_text(source)
            command = [
                str(self.path),
                "--fatbin",
                "-O3",
                f"-gencode=arch=compute_{number},code=[sm_{number},compute_{number}]",
                "--no-compress",
                # the flags TVM's own nvcc call uses for the code it generates
                "--use_fast_math",
                "--expt-relaxed-constexpr",
                "-U__CUDA_NO_HALF_OPERATORS__",
                "-U__CUDA_NO_HALF_CONVERSIONS__",
                "-o",
                str(out),
                str(cu),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise EdgepruneError(
                    f"nvcc failed to compile the kernels for {arch}: {(done.stderr or done.stdout).strip()[-2000:]}",
                    hint="nvcc also needs a host C++ compiler (g++) on PATH",
                )
            return out.read_bytes()


def _capability(arch: str) -> int:
    match = ARCH.fullmatch(arch)
    if match is None:
        raise EdgepruneError(f"'{arch}' is not a CUDA architecture like 'sm_87'")
    return int(match.group(1))


def _nvcc_candidates() -> Iterator[Path]:
    """`$CUDA_PATH/bin/nvcc`, then the one `pip install edgeprune[cuda]` put beside this Python (CUDA 13 wheels
    install into `nvidia/cu13/`), then the first on PATH."""
    if os.environ.get("CUDA_PATH"):
        yield Path(os.environ["CUDA_PATH"]) / "bin" / "nvcc"
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        yield Path(root) / "cu13" / "bin" / "nvcc"
    on_path = shutil.which("nvcc")
    if on_path:
        yield Path(on_path)


@cache
def find_nvcc() -> Nvcc:
    """The nvcc device code is compiled with, or a clear error naming what to install."""
    path = next((p for p in _nvcc_candidates() if p.is_file() and os.access(p, os.X_OK)), None)
    if path is None:
        raise EdgepruneError("nvcc is not installed: it compiles the kernels of CUDA devices", hint=NVCC_HINT)
    try:
        version = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True).stdout
        archs = subprocess.run([str(path), "--list-gpu-arch"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EdgepruneError(f"{path} does not run: {exc}", hint=NVCC_HINT) from exc
    release = re.search(r"release (\d+\.\d+)", version)
    return Nvcc(
        path=path,
        release=release.group(1) if release else "(unknown release)",
        capabilities=frozenset(int(n) for n in re.findall(r"compute_(\d+)", archs)),
    )


def _cuda_sources(module: Any) -> list[bytes]:
    """The CUDA C++ of every CUDA module in the import tree that TVM left uncompiled."""
    sources, stack = [], [module]
    while stack:  # the import tree is small and has no cycles
        current = stack.pop()
        if current.kind == CUDA and (source := current.inspect_source(CUDA)):
            sources.append(source.encode())
        stack.extend(current.imports)
    return sources


def _compiled_module(data: bytes, sources: list[bytes], compile_source: Callable[[str], bytes]) -> bytes:
    """A serialized CUDA module ([format][function table][code]) with CUDA C++ code replaced by its fatbin.

    The function table is kept byte for byte; the code is found as the module's known source at the end.
    """
    fmt = _string(_SOURCE_FORMAT)
    if not data.startswith(fmt):
        return data  # compiled already (TVM had a CUDA runtime): ptx, cubin or fatbin
    source = next((s for s in sources if data.endswith(_string(s))), None)
    if source is None:
        raise EdgepruneError(
            "the CUDA module's layout in this TVM is not the one edgeprune knows ([format][functions][code])",
            hint="use the apache-tvm version edgeprune pins",
        )
    table = data[len(fmt) : len(data) - len(_string(source))]
    return _string(DEVICE_CODE_FORMAT.encode()) + table + _string(compile_source(source.decode()))


def _unpack(blob: bytes) -> tuple[bytes, list[tuple[bytes, bytes | None]]]:
    """TVM's packed imports: a u64 size, the import tree as two u64 vectors, then per module its kind and, but
    for the host library `_lib`, its bytes. Returns the tree's bytes and (kind, bytes or None) per module."""
    (size,) = struct.unpack_from("<Q", blob)
    if size != len(blob) - 8:
        raise EdgepruneError(f"packed TVM imports of {len(blob) - 8} bytes say they hold {size}")
    pos = 8
    for _ in range(2):  # row pointers, child indices
        (count,) = struct.unpack_from("<Q", blob, pos)
        pos += 8 + 8 * count
    tree, modules = blob[8:pos], []

    def string() -> bytes:
        nonlocal pos
        (length,) = struct.unpack_from("<Q", blob, pos)
        pos += 8 + length
        return blob[pos - length : pos]

    while pos < len(blob):
        kind = string()
        modules.append((kind, None if kind == b"_lib" else string()))
    return tree, modules


def _pack(tree: bytes, modules: list[tuple[bytes, bytes | None]]) -> bytes:
    payload = tree + b"".join(_string(kind) + (b"" if data is None else _string(data)) for kind, data in modules)
    return _u64(len(payload)) + payload


def compile_device_code(blob: bytes, sources: list[bytes], compile_source: Callable[[str], bytes]) -> bytes:
    """Packed TVM imports with every CUDA module's C++ (one of `sources`) compiled by `compile_source`."""
    tree, modules = _unpack(blob)
    return _pack(
        tree,
        [
            (kind, _compiled_module(data, sources, compile_source) if kind == _CUDA_MODULE and data else data)
            for kind, data in modules
        ],
    )


def cuda_modules(blob: bytes) -> list[tuple[str, bytes]]:
    """(format, serialized module) of each CUDA module in packed TVM imports: what a library ships for the GPU."""
    found = []
    for kind, data in _unpack(blob)[1]:
        if kind == _CUDA_MODULE and data:
            (length,) = struct.unpack_from("<Q", data)
            found.append((data[8 : 8 + length].decode(), data))
    return found


@register(CUDA)
class CUDADevice(Device):
    """An NVIDIA GPU reached through TVM RPC: kernels for its `arch`, host code for its CPU (`target.host`)."""

    target_kinds = (CUDA,)
    target_keys = {
        "kind": str,
        "arch": str,
        "host": dict,
        "max_threads_per_block": int,
        "max_shared_memory_per_block": int,
        "thread_warp_size": int,
        "registers_per_block": int,
        "max_num_threads": int,
    }

    @classmethod
    def target_problems(cls, target: dict[str, Any]) -> dict[str, str]:
        problems = {}
        arch = target.get("arch")
        if arch is None:
            problems["arch"] = "missing: the GPU's architecture, e.g. 'sm_87' for a Jetson Orin"
        elif not ARCH.fullmatch(arch):
            problems["arch"] = f"'{arch}' is not a CUDA architecture like 'sm_87'"
        host = target.get("host")
        if host is None:
            problems["host"] = "missing: a table for the CPU that runs the model's host code, e.g. kind = 'llvm'"
        for key, value in (host or {}).items():
            expected = HOST_KEYS.get(key)
            if expected is None:
                problems[f"host.{key}"] = f"unknown host target key (known: {', '.join(HOST_KEYS)})"
            elif not isinstance(value, expected) or isinstance(value, bool):
                problems[f"host.{key}"] = f"expected {expected.__name__}, got {type(value).__name__}"
        if not all(isinstance(a, str) for a in (host or {}).get("mattr", [])):
            problems["host.mattr"] = "expected a list of strings like ['+neon']"
        if host is not None and host.get("kind") != "llvm":
            problems["host.kind"] = f"must be 'llvm' (the host CPU), got {host.get('kind')!r}"
        for key in ("max_threads_per_block", "max_shared_memory_per_block", "thread_warp_size"):
            if key in target and target[key] < 1:
                problems[key] = "must be >= 1"
        return problems

    @property
    def host(self) -> dict[str, Any]:
        return dict(self.target.get("host", {}))

    @property
    def arch(self) -> str:
        return str(self.target["arch"])

    @property
    def architecture(self) -> str:
        """The host CPU's architecture: the library is an ELF for it, with the GPU code inside."""
        return str(self.host.get("mtriple", "")).split("-", 1)[0] or platform.machine()

    @property
    def channel_step(self) -> int:
        """A warp (32 threads): MetaSchedule's CUDA rules bind output channels to threads in warp-sized groups,
        and fp32 convolutions use no tensor cores here (their 16-wide tiles would be the step for fp16).
        Not measured on a GPU yet."""
        return int(self.target.get("thread_warp_size", 32))

    def runtime_device(self, session: RPCSession) -> Any:
        return session.cuda(0)

    @property
    def runtime_kind(self) -> str:
        return CUDA

    def check_toolchain(self) -> None:
        """The cross compiler for the host code (as for a CPU board), and an nvcc that compiles for the arch."""
        super().check_toolchain()
        find_nvcc().check_arch(self.arch)

    def pack_imports(self) -> Callable[..., str]:
        return self._pack_imports

    def _pack_imports(self, module: Any, is_system_lib: bool, symbol_prefix: str, workspace_dir: str) -> str:
        """TVM's `fpack_imports`: the imported modules packed as TVM packs them, CUDA C++ compiled for the arch,
        written as an object file for the host (as Hexagon's packer in TVM does)."""
        import tvm

        def compile_source(source: str) -> bytes:
            nvcc = find_nvcc()
            nvcc.check_arch(self.arch)
            return nvcc.fatbin(source, self.arch)

        blob = bytes(tvm.get_global_func("runtime.ModulePackImportsToTensor")(module).numpy())
        blob = compile_device_code(blob, _cuda_sources(module), compile_source)
        packed = tvm.get_global_func("codegen.codegen_blob")(blob, is_system_lib, json.dumps(self.host), symbol_prefix)
        path = Path(workspace_dir) / f"{symbol_prefix}devc.o"
        packed.write_to_file(str(path))
        return str(path)

    def prepare_tuning(self) -> None:
        """Register TVM's CUDA tensor intrinsics for MetaSchedule's GPU rules. A CPU device in this process may
        have put empty stand-ins for them in `sys.modules` (see `CPUDevice.prepare_tuning`): those are dropped
        and the real module is imported, which registers the intrinsics."""
        name = "tvm.s_tir.tensor_intrin.cuda"
        loaded = sys.modules.get(name)
        if loaded is not None and getattr(loaded, "__file__", None) is None:
            del sys.modules[name]
        importlib.import_module(name)
        importlib.import_module("tvm.s_tir.tensor_intrin")


@register(LOCAL_GPU)
class LocalGPUDevice(OnThisMachine, CUDADevice):
    """This machine's GPU through a loopback farm of its own (tracker, servers under key `local-gpu`); its
    servers' CPU side (launches, copies) runs on the cores builds use, so the two never overlap."""


def gpu_target() -> dict[str, Any]:
    """TVM target of this machine's GPU, read from the GPU itself, with this CPU as its host."""
    import tvm

    gpu = tvm.cuda(0)
    if not gpu.exist:
        raise EdgepruneError(
            "no CUDA GPU is visible to TVM on this machine",
            hint="local-gpu needs an NVIDIA GPU with its driver, and TVM's CUDA runtime (libtvm_runtime_cuda.so) "
            "must find libcudart.so.13 (pip install nvidia-cuda-runtime, or add the toolkit's lib64 to "
            "LD_LIBRARY_PATH)",
        )
    return {
        "kind": CUDA,
        "arch": "sm_" + str(gpu.compute_version).replace(".", ""),
        "max_threads_per_block": int(gpu.max_threads_per_block),
        "max_shared_memory_per_block": int(gpu.max_shared_memory_per_block),
        "thread_warp_size": int(gpu.warp_size),
        "host": host_target(),
    }


def local_gpu_device(profiles_root: Path, port: int = LOCAL_GPU_DEFAULT_PORT, key: str = LOCAL_GPU) -> LocalGPUDevice:
    """The built-in device for this machine's GPU, on a tracker at 127.0.0.1:`port`."""
    import tvm

    target = gpu_target()
    return LocalGPUDevice(
        name=LOCAL_GPU,
        description=f"This machine's GPU ({tvm.cuda(0).device_name}), through a local TVM RPC farm on 127.0.0.1",
        target=target,
        tracker_host="127.0.0.1",
        tracker_port=port,
        key=key,
        profiles_root=profiles_root,
    )
