"""The `cuda` kind without a GPU: profile parsing, the device code packed into the library, and the Jetson Orin
artifact cross-compiled here (real nvcc and aarch64 linker; skipped, saying why, where either is missing)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeprune.devices import cuda
from edgeprune.devices.profile import load_device, load_profile
from edgeprune.errors import EdgepruneError

SHIPPED = Path(__file__).resolve().parents[1] / "edgeprune" / "boards"
ORIN_GPU = "jetson-orin-nano-gpu"
EM_AARCH64, EM_CUDA = 183, 190
FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)

GPU_PROFILE = """
name = "{name}"
kind = "cuda"
[target]
kind = "cuda"
arch = "sm_87"
max_threads_per_block = 1024
[target.host]
kind = "llvm"
mtriple = "aarch64-linux-gnu"
mcpu = "cortex-a78"
mattr = ["+neon"]
[tracker]
host = "127.0.0.1"
port = 9190
key = "gpu"
"""


def write(tmp_path: Path, text: str, name: str = "gpu") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text.format(name=name))
    return path


def nvcc_or_skip() -> cuda.Nvcc:
    try:
        return cuda.find_nvcc()
    except EdgepruneError as exc:
        pytest.skip(f"nvcc is not installed ({exc.hint})")


@pytest.fixture
def no_nvcc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A machine where no nvcc can be found (nowhere to look)."""
    cuda.find_nvcc.cache_clear()
    monkeypatch.setattr(cuda, "_nvcc_candidates", lambda: iter(()))
    yield
    cuda.find_nvcc.cache_clear()


def test_gpu_profile_fields(tmp_path: Path) -> None:
    device = load_profile(write(tmp_path, GPU_PROFILE))
    assert isinstance(device, cuda.CUDADevice) and device.kind == "cuda"
    assert device.arch == "sm_87" and device.host["mtriple"] == "aarch64-linux-gnu"
    assert device.architecture == "aarch64" and device.needs_cross_link
    assert device.channel_step == 32 and device.runtime_kind == "cuda"


def test_shipped_orin_gpu_profile() -> None:
    device = load_profile(SHIPPED / f"{ORIN_GPU}.toml")
    assert device.target["arch"] == "sm_87" and device.target["host"]["mcpu"] == "cortex-a78"
    assert device.cross_compiler == "aarch64-linux-gnu-g++"
    assert device.key == load_profile(SHIPPED / "jetson-orin-nano.toml").key  # one server serves CPU and GPU


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('arch = "sm_87"\n', 'arch = "87"\n', "target.arch"),
        ('arch = "sm_87"\n', "", "target.arch"),
        ("max_threads_per_block = 1024", 'max_threads_per_block = "1024"', "target.max_threads_per_block"),
        ("max_threads_per_block = 1024", "max_threads_per_block = 0", "target.max_threads_per_block"),
        ("max_threads_per_block = 1024", "mcpu = 'x'", "target.mcpu"),
        ('[target.host]\nkind = "llvm"', '[target.host]\nkind = "cuda"', "target.host.kind"),
        ('mcpu = "cortex-a78"', 'cpu = "cortex-a78"', "target.host.cpu"),
        ('mattr = ["+neon"]', "mattr = [1]", "target.host.mattr"),
        ('mattr = ["+neon"]', 'mattr = "+neon"', "target.host.mattr"),
        ('kind = "cuda"\n[target]\nkind = "cuda"', 'kind = "cuda"\n[target]\nkind = "llvm"', "target.kind"),
        ('kind = "cuda"\n[target]', 'kind = "local-gpu"\n[target]', "kind"),
    ],
)
def test_bad_gpu_profile_names_file_and_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    assert old in GPU_PROFILE
    path = write(tmp_path, GPU_PROFILE.replace(old, new, 1))
    with pytest.raises(EdgepruneError) as info:
        load_profile(path)
    assert str(path) in info.value.message and f"'{field}'" in info.value.message


def test_missing_host_is_named(tmp_path: Path) -> None:
    text = GPU_PROFILE.split("[target.host]")[0] + "[tracker]" + GPU_PROFILE.split("[tracker]")[1]
    with pytest.raises(EdgepruneError, match=r"'target\.host': missing"):
        load_profile(write(tmp_path, text))


def test_local_gpu_is_built_in(tmp_path: Path) -> None:
    with pytest.raises(EdgepruneError, match="built-in device"):
        load_profile(write(tmp_path, GPU_PROFILE, name="local-gpu"))


def _packed(modules: list[tuple[bytes, bytes | None]]) -> bytes:
    tree = struct.pack("<Q", 2) + struct.pack("<QQ", 0, 1) + struct.pack("<Q", 1) + struct.pack("<Q", 1)
    return cuda._pack(tree, modules)


def _cuda_module(fmt: bytes, table: bytes, code: bytes) -> bytes:
    return cuda._string(fmt) + table + cuda._string(code)


def test_device_code_is_compiled_into_the_packed_imports() -> None:
    source, table = b'extern "C" __global__ void k() {}', b"\x01\x00\x00\x00\x00\x00\x00\x00functions"
    vm = b"\x1e\x15 relax bytecode"
    blob = _packed([(b"relax.VMExecutable", vm), (b"_lib", None), (b"cuda", _cuda_module(b"cuda", table, source))])
    packed = cuda.compile_device_code(blob, [source], lambda text: b"FATBIN(" + text.encode() + b")")
    tree, modules = cuda._unpack(packed)
    assert tree == cuda._unpack(blob)[0]
    assert modules[:2] == [(b"relax.VMExecutable", vm), (b"_lib", None)]
    assert modules[2] == (b"cuda", _cuda_module(b"fatbin", table, b"FATBIN(" + source + b")"))
    assert [fmt for fmt, _ in cuda.cuda_modules(packed)] == ["fatbin"]


def test_compiled_device_code_is_kept() -> None:
    blob = _packed([(b"_lib", None), (b"cuda", _cuda_module(b"cubin", b"table", b"\x7fELF..."))])
    assert cuda.compile_device_code(blob, [], lambda text: pytest.fail("nothing to compile")) == blob


def test_unknown_cuda_module_layout_is_refused() -> None:
    blob = _packed([(b"cuda", _cuda_module(b"cuda", b"table", b"some other source"))])
    with pytest.raises(EdgepruneError, match="layout"):
        cuda.compile_device_code(blob, [b"the source TVM reported"], lambda text: b"")


def test_truncated_packed_imports_are_refused() -> None:
    with pytest.raises(EdgepruneError, match="say they hold"):
        cuda.compile_device_code(_packed([(b"_lib", None)])[:-2], [], lambda text: b"")


def test_missing_nvcc_names_the_package(no_nvcc: None) -> None:
    with pytest.raises(EdgepruneError) as info:
        load_device(ORIN_GPU).check_toolchain()
    assert "nvcc is not installed" in info.value.message
    assert "edgeprune[cuda]" in str(info.value.hint) and "nvidia-cuda-nvcc" in str(info.value.hint)


def test_arch_nvcc_cannot_compile_for_is_named(tmp_path: Path) -> None:
    nvcc = nvcc_or_skip()
    if 53 in nvcc.capabilities:
        pytest.skip(f"nvcc {nvcc.release} still compiles for sm_53")
    device = load_profile(write(tmp_path, GPU_PROFILE.replace("sm_87", "sm_53")))
    with pytest.raises(EdgepruneError, match=r"cannot compile for sm_53") as info:
        cuda.find_nvcc().check_arch(device.arch)
    assert "Jetson Nano" in str(info.value.hint)


def elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF"
    return int(struct.unpack("<H", data[18:20])[0])


@pytest.fixture(scope="module")
def orin_artifact(tmp_path_factory: pytest.TempPathFactory, isolated_env: pytest.MonkeyPatch) -> Path:
    """`edgeprune compile lenet5 --device jetson-orin-nano-gpu --trials 0` on this machine, without a GPU."""
    nvcc_or_skip()
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("aarch64-linux-gnu-g++ is not installed (apt-get install g++-aarch64-linux-gnu)")
    out = tmp_path_factory.mktemp("orin") / "art"
    command = [sys.executable, "-m", "edgeprune", "compile", "lenet5", "--device", ORIN_GPU, "--input-shape",
               "1x8x8", "--width", "0.5", "--trials", "0", "-o", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return out


def test_orin_artifact_holds_sm87_code_for_an_aarch64_host(orin_artifact: Path) -> None:
    manifest = json.loads((orin_artifact / "manifest.json").read_text())
    assert manifest["device"] == ORIN_GPU
    assert manifest["target"]["kind"] == "cuda" and manifest["target"]["arch"] == "sm_87"
    assert manifest["target"]["host"]["mtriple"] == "aarch64-linux-gnu"
    library = (orin_artifact / manifest["library"]).read_bytes()
    assert elf_machine(library) == EM_AARCH64
    fatbin = library[library.index(FATBIN_MAGIC) :]
    assert elf_machine(fatbin[fatbin.index(b"\x7fELF") :]) == EM_CUDA  # the GPU's machine code (SASS)
    assert b".target sm_87" in fatbin  # and its PTX
    assert b"__global__" not in library  # no CUDA C++ left for the board to compile


@pytest.mark.slow  # importing TVM's CUDA intrinsics takes about 40 s on two cores
def test_prepare_tuning_registers_cuda_intrinsics_after_a_cpu_device_stubbed_them() -> None:
    """A CPU device's `prepare_tuning` leaves empty stand-ins for TVM's CUDA intrinsics; a CUDA device tuning
    later in the same process must get the real ones (in a fresh process: these imports are process-wide)."""
    script = """
import sys
from edgeprune.devices.profile import load_device
load_device("jetson-orin-nano").prepare_tuning()
assert getattr(sys.modules["tvm.s_tir.tensor_intrin.cuda"], "__file__", None) is None, "not stubbed"
load_device("jetson-orin-nano-gpu").prepare_tuning()
from tvm.s_tir import TensorIntrin
TensorIntrin.get("mma_ldmatrix_f16_a")
print("registered")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0 and "registered" in done.stdout, done.stderr[-2000:]
