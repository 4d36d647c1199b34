"""The runtime-only TVM bundle (tools/gpu_bundle.py) that carries artifacts to the GPU machine, tested on this CPU:
built for `local`, its run.py runs the artifact in a fresh venv that has numpy and nothing else (no TVM, no
libtvm_compiler.so, no PyTorch), and the outputs match PyTorch's."""

from __future__ import annotations

import importlib.util
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "gpu_bundle.py"
PYTHON = ".".join(platform.python_version_tuple()[:2])
MODEL = ["--model", "lenet5", "--input-shape", "1x8x8", "--width", "0.5"]  # tiny and untuned: seconds to build
TINY = ["--device", "local", "--python-version", PYTHON, *MODEL]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_bundle", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(out: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(TOOL), str(out), *TINY, "--cache", str(cache), *extra]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundle-cache")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, isolated_env: pytest.MonkeyPatch, cache: Path) -> Path:
    """A bundle of a tiny untuned LeNet for this CPU and this Python."""
    out = tmp_path_factory.mktemp("bundle") / "cpu-bundle"
    done = build(out, cache)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "total" in done.stdout and "MiB" in done.stdout  # the size, by part
    return out


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with numpy alone (from pip's configured sources, as the Makefile installs): no TVM, no torch."""
    venv = tmp_path_factory.mktemp("venv") / "runtime"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = [
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "-q",
        "--no-input",
        f"numpy=={np.__version__}",
    ]
    done = subprocess.run(install, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"pip could not install numpy into a fresh venv here: {done.stderr.strip()[-300:]}")
    probe = "import importlib.util as u; print([n for n in ('tvm', 'tvm_ffi', 'torch') if u.find_spec(n)])"
    assert subprocess.run([str(python), "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"
    return python


def test_bundle_holds_the_runtime_and_no_compiler(bundle: Path) -> None:
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert not [n for n in names if "libtvm_compiler" in n]
    assert {
        "site/tvm/lib/libtvm_runtime.so",
        "site/tvm/lib/libtvm_runtime_cuda.so",
        "site/tvm_ffi/lib/libtvm_ffi.so",
        "site/typing_extensions.py",
        "run.py",
        "bundle.json",
    } <= names
    assert not [n for n in names if n.startswith(("site/tvm/relax/", "site/tvm/s_tir/", "site/tvm/topi/"))]
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["models"] == ["lenet5"] and info["runtime_kind"] == "cpu" and info["python"] == PYTHON
    model = bundle / "models" / "lenet5"
    assert {"model.so", "reference_input.npy", "reference_output.npy", "manifest.json", "torch_model.pt"} <= {
        p.name for p in model.iterdir()
    }


def test_runtime_only_bundle_runs_in_a_fresh_venv(bundle: Path, fresh_python: Path, tmp_path: Path) -> None:
    """The proof that the runtime alone runs an artifact: a Python with numpy only, TVM from the bundle."""
    done = subprocess.run(
        [
            str(fresh_python),
            str(bundle / "run.py"),
            "--out",
            str(tmp_path),
            "--name",
            "cpu",
            "--rounds",
            "2",
            "--min-repeat-ms",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads((tmp_path / "cpu.json").read_text())
    assert report["runtime_only"] is True and report["device"]["kind"] == "cpu"
    assert "libtvm_compiler.so" not in report["runtime_libraries"]
    (model,) = report["models"]
    assert model["matches"] and model["max_abs_diff"] < 1e-5  # the library on the CPU vs PyTorch's stored output
    assert model["tvm"]["samples"] == 2 * 3 and 0 < model["tvm"]["min_ms"] <= model["tvm"]["median_ms"]
    assert model["torch"] is None and model["torch_skipped"] == "PyTorch is not installed here"
    assert "| lenet5 | 1x1x8x8 |" in (tmp_path / "cpu.md").read_text()


def test_bundle_for_another_python_is_refused(bundle: Path, fresh_python: Path, tmp_path: Path) -> None:
    other = tmp_path / "bundle"
    shutil.copytree(bundle, other)
    info = json.loads((other / "bundle.json").read_text())
    (other / "bundle.json").write_text(json.dumps({**info, "python": "3.99"}))
    done = subprocess.run([str(fresh_python), str(other / "run.py")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "built for Python 3.99" in done.stderr
    assert not (other / "results").exists()


def test_oversized_bundle_is_refused_and_nothing_is_written(
    bundle: Path, cache: Path, tmp_path: Path, isolated_env: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "small"
    done = build(out, cache, "--max-mib", "1")
    assert done.returncode != 0 and "over the 1 MiB limit" in done.stderr
    assert "reusing" in done.stdout  # the compiled artifact came from the cache
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_a_folder_that_is_no_bundle_is_not_replaced(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    done = build(tmp_path, cache)
    assert done.returncode != 0 and "not a bundle folder" in done.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_only_runtime_files_are_wanted() -> None:
    wanted = _tool().wanted
    assert wanted("tvm", "lib/libtvm_runtime.so") and not wanted("tvm", "lib/libtvm_compiler.so")
    assert wanted("tvm", "runtime/vm.py") and not wanted("tvm", "relax/vm_build.py")
    assert wanted("tvm", "backend/loader.py") and not wanted("tvm", "backend/cuda/op.py")
    assert wanted("tvm_ffi", "core.cpython-312-x86_64-linux-gnu.so") and not wanted("tvm_ffi", "include/x.h")


@pytest.fixture(scope="module")
def gpu_bundle(tmp_path_factory: pytest.TempPathFactory, isolated_env: pytest.MonkeyPatch, cache: Path) -> Path:
    """The GPU machine's bundle, for this Python and a tiny model: built here, without a GPU (needs nvcc)."""
    from edgeprune.devices import cuda
    from edgeprune.errors import EdgepruneError

    try:
        cuda.find_nvcc()
    except EdgepruneError as exc:
        pytest.skip(f"nvcc is not installed ({exc.hint})")
    out = tmp_path_factory.mktemp("gpu-bundle") / "bundle"
    done = build(out, cache, "--device", "h100-sm90")  # the later --device wins over TINY's
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_gpu_bundle_holds_sm90_code_for_an_x86_host(gpu_bundle: Path) -> None:
    info = json.loads((gpu_bundle / "bundle.json").read_text())
    assert info["device"] == "h100-sm90" and info["runtime_kind"] == "cuda" and info["target"]["arch"] == "sm_90"
    library = (gpu_bundle / "models" / "lenet5" / "model.so").read_bytes()
    assert library[:4] == b"\x7fELF" and int.from_bytes(library[18:20], "little") == 62  # x86-64
    fatbin = library[library.index((0xBA55ED50).to_bytes(4, "little")) :]
    cubin = fatbin[fatbin.index(b"\x7fELF") :]
    assert int.from_bytes(cubin[18:20], "little") == 190  # a CUDA ELF: the GPU's machine code (SASS)
    assert b".target sm_90" in fatbin and b"__global__" not in library  # its PTX, and no CUDA C++ left


def test_gpu_bundle_without_a_gpu_says_so(gpu_bundle: Path, fresh_python: Path, tmp_path: Path) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver: tools/check_gpu.sh runs the bundle for real")
    done = subprocess.run(
        [str(fresh_python), str(gpu_bundle / "run.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "CUDA" in done.stderr and not list(tmp_path.iterdir())


LOAD_SM90 = """
import ctypes, os, sys
bundle = sys.argv[1]
sys.path.insert(0, os.path.join(bundle, "site"))
os.environ["TVM_USE_RUNTIME_LIB"] = "1"
import tvm
ctypes.CDLL(os.path.join(bundle, "site", "tvm", "lib", "libtvm_runtime_cuda.so"), mode=ctypes.RTLD_GLOBAL)
lib = tvm.runtime.load_module(os.path.join(bundle, "models", "lenet5", "model.so"))
print(lib.kind, [m.kind for m in lib.imports], [m.kind for m in lib.imports[0].imports], tvm.base._RUNTIME_ONLY)
"""


def test_gpu_library_loads_in_runtime_only_tvm(gpu_bundle: Path, fresh_python: Path, tmp_path: Path) -> None:
    """Short of a GPU: the runtime-only TVM loads its CUDA runtime (against a stand-in libcuda.so.1 that exports
    what it links and does nothing) and reads the library's sm_90 fatbin module back, as run.py does first."""
    runtime_cuda = gpu_bundle / "site" / "tvm" / "lib" / "libtvm_runtime_cuda.so"
    if not (shutil.which("gcc") and shutil.which("nm")):
        pytest.skip("gcc and nm build the stand-in libcuda.so.1")
    cudart = [p / "nvidia" / "cu13" / "lib" for p in map(Path, sys.path) if (p / "nvidia" / "cu13" / "lib").is_dir()]
    if not cudart:
        pytest.skip("no libcudart.so.13 beside this Python (pip install 'edgeprune[cuda]')")
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(runtime_cuda)], capture_output=True, text=True)
    symbols = sorted({line.split()[-1].split("@")[0] for line in undefined.stdout.splitlines() if " cu" in line})
    assert "cuModuleLoadData" in symbols
    (tmp_path / "cuda.c").write_text("".join(f"int {name}(void) {{ return 100; }}\n" for name in symbols))
    stub = tmp_path / "libcuda.so.1"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(stub), str(tmp_path / "cuda.c")], check=True
    )
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": f"{tmp_path}:{cudart[0]}"}
    done = subprocess.run(
        [str(fresh_python), "-c", LOAD_SM90, str(gpu_bundle)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["relax.VMExecutable", "['library']", "['cuda']", "True"]
