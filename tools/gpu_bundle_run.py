"""Run the compiled artifacts of a runtime-only TVM bundle (written by tools/gpu_bundle.py) on this machine.

This file is copied into the bundle as `run.py` and runs there alone: it needs Python, numpy and the bundle's
`site/` folder (TVM's runtime libraries and Python files, `tvm_ffi` for this Python, never
`libtvm_compiler.so`); PyTorch is optional (only the eager timing needs it). For each model it checks the
library's output on the device against PyTorch's output stored in the bundle (max abs diff), then times the
library with TVM's `time_evaluator` and, where PyTorch can load the stored model, PyTorch eager on the same
device, in interleaved rounds (load that comes and goes hits both alike). Writes NAME.json and NAME.md.

    python3 run.py                         # on the device the bundle was built for: cuda(0) or cpu(0)
    python3 run.py --out results --name gpu --rounds 5 --no-torch
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SITE = HERE / "site"
TOLERANCE = 1e-3  # max abs diff to PyTorch's output; GPU fast math and other reduction orders stay far below
CUDART = "libcudart.so.13"  # what TVM 0.27's libtvm_runtime_cuda.so links


class BundleError(Exception):
    """A problem the user can act on: printed as one line, exit status 1."""


def runtime_only_tvm() -> Any:
    """TVM from the bundle only, in runtime-only mode: the bundle's `site` first on the path, no compiler
    library, and no attempt by tvm_ffi to JIT-compile its optional PyTorch extension (it needs a C++ toolchain
    and minutes; DLPack works without it)."""
    if (SITE / "tvm" / "lib" / "libtvm_compiler.so").exists():
        raise BundleError(f"{SITE}/tvm/lib holds libtvm_compiler.so: this is not a runtime-only bundle")
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    os.environ["TVM_FFI_DISABLE_TORCH_C_DLPACK"] = "1"
    sys.path.insert(0, str(SITE))
    import tvm

    if not str(Path(tvm.__file__).resolve()).startswith(str(SITE)):
        raise BundleError(f"imported TVM from {tvm.__file__}, not from the bundle's {SITE}")
    if "tvm_compiler" in tvm.base._LOADED_LIBS:
        raise BundleError("TVM loaded its compiler library; the bundle must run on the runtime alone")
    return tvm


def _cudart_candidates() -> list[Path]:
    """Where libcudart.so.13 may be: $CUDA_PATH, the usual toolkit folders, and NVIDIA's pip wheels beside
    this Python (PyTorch's CUDA 13 build installs nvidia-cuda-runtime into nvidia/cu13/lib)."""
    folders = [Path(os.environ["CUDA_PATH"]) / "lib64"] if os.environ.get("CUDA_PATH") else []
    folders += [Path("/usr/local/cuda/lib64"), Path("/usr/local/cuda/targets/x86_64-linux/lib")]
    for entry in sys.path:
        folders += [Path(entry) / "nvidia" / "cu13" / "lib", Path(entry) / "nvidia" / "cuda_runtime" / "lib"]
    return [folder / CUDART for folder in folders]


def load_cuda_runtime(tvm: Any) -> None:
    """Load TVM's CUDA runtime (runtime-only TVM does not load its device backends by itself), after the CUDA
    runtime it links: found by the loader, else in the places `_cudart_candidates` lists."""
    try:
        ctypes.CDLL(CUDART, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        found = next((p for p in _cudart_candidates() if p.is_file()), None)
        if found is None:
            raise BundleError(
                f"{CUDART} not found (TVM's CUDA runtime needs it): pip install nvidia-cuda-runtime, or set "
                "CUDA_PATH to a CUDA 13 toolkit"
            ) from None
        ctypes.CDLL(str(found), mode=ctypes.RTLD_GLOBAL)
    try:
        ctypes.CDLL(str(SITE / "tvm" / "lib" / "libtvm_runtime_cuda.so"), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise BundleError(f"TVM's CUDA runtime does not load: {exc} (no NVIDIA driver here? nvidia-smi)") from exc
    if not tvm.cuda(0).exist:
        raise BundleError("TVM sees no CUDA GPU here (is the NVIDIA driver loaded? nvidia-smi)")


def gpu_facts(tvm: Any) -> dict[str, Any]:
    """The GPU's name, compute capability and driver: from nvidia-smi where it is, else from TVM."""
    dev = tvm.cuda(0)
    facts = {"name": str(dev.device_name), "compute_version": str(dev.compute_version), "driver": None}
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader", "-i", "0"]
        done = subprocess.run(query, capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip():
            name, driver, memory = (part.strip() for part in done.stdout.strip().split(",", 2))
            facts.update(name=name, driver=driver, memory=memory)
    if facts["driver"] is None:
        facts["driver"] = f"CUDA driver API {dev.driver_version}"
    return facts


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def spread(samples_s: list[float]) -> dict[str, Any]:
    """Median, half the interquartile range and minimum of per-call times, in ms."""
    import numpy as np

    ms = np.asarray(samples_s) * 1e3
    q1, median, q3 = np.percentile(ms, [25, 50, 75])
    return {
        "median_ms": round(float(median), 5),
        "half_iqr_ms": round(float(q3 - q1) / 2, 5),
        "min_ms": round(float(ms.min()), 5),
        "samples": len(ms),
    }


class TorchEager:
    """The stored PyTorch model in eager mode on the same device: fp32 throughout (TF32 off, so it does the
    arithmetic TVM's kernels do), one sample = enough calls to last `min_repeat_ms`, the device synchronized."""

    def __init__(self, path: Path, kind: str, x: Any) -> None:
        import torch

        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        payload = torch.load(path, map_location="cpu", weights_only=False)  # a bundle one built oneself
        module = payload["module"] if isinstance(payload, dict) else payload
        self.torch = torch
        self.device = torch.device("cuda:0" if kind == "cuda" else "cpu")
        self.module = module.eval().to(self.device)
        self.x = torch.from_numpy(x).to(self.device)
        self.number = 1

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def output(self) -> Any:
        with self.torch.inference_mode():
            out = self.module(self.x)
        self.sync()
        return out.cpu().numpy()

    def calibrate(self, min_repeat_ms: float) -> None:
        """Grow the calls per sample until one sample lasts `min_repeat_ms` (as time_evaluator does)."""
        while self._sample() * self.number * 1e3 < min_repeat_ms and self.number < 1 << 20:
            self.number *= 2

    def _sample(self) -> float:
        with self.torch.inference_mode():
            self.sync()
            start = time.perf_counter()
            for _ in range(self.number):
                self.module(self.x)
            self.sync()
        return (time.perf_counter() - start) / self.number

    def samples(self, repeat: int) -> list[float]:
        return [self._sample() for _ in range(repeat)]


def load_torch(folder: Path, kind: str, x: Any, wanted: bool) -> tuple[TorchEager | None, str | None]:
    """PyTorch eager for this model, or None and why not (PyTorch missing, no stored model, no such device)."""
    if not wanted:
        return None, "--no-torch"
    if not (folder / "torch_model.pt").is_file():
        return None, "the bundle holds no PyTorch model for it"
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed here"
    if kind == "cuda" and not torch.cuda.is_available():
        return None, f"PyTorch {torch.__version__} sees no CUDA GPU"
    try:
        return TorchEager(folder / "torch_model.pt", kind, x), None
    except Exception as exc:  # noqa: BLE001 - another PyTorch may fail to unpickle in many ways
        return None, f"PyTorch {torch.__version__} could not load the stored model: {type(exc).__name__}: {exc}"


def run_model(tvm: Any, folder: Path, kind: str, rounds: int, min_repeat_ms: int, with_torch: bool) -> dict[str, Any]:
    """Check one artifact's output on the device and time it against PyTorch eager, interleaved."""
    import numpy as np
    from tvm.runtime.vm import VirtualMachine

    manifest = json.loads((folder / "manifest.json").read_text())
    dev = tvm.cuda(0) if kind == "cuda" else tvm.cpu(0)
    x, expected = np.load(folder / "reference_input.npy"), np.load(folder / "reference_output.npy")
    vm = VirtualMachine(tvm.runtime.load_module(str(folder / manifest["library"])), dev)
    x_dev = tvm.runtime.tensor(x, dev)
    got = vm["main"](x_dev).numpy()
    diff = float(np.max(np.abs(got - expected)))
    result: dict[str, Any] = {
        "model": folder.name,
        "input_shape": list(x.shape),
        "max_abs_diff": diff,
        "matches": bool(np.allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE)),
        "tvm": None,
        "torch": None,
        "torch_max_abs_diff": None,
        "torch_skipped": None,
    }
    eager, result["torch_skipped"] = load_torch(folder, kind, x, with_torch)
    if eager is not None:
        result["torch_max_abs_diff"] = float(np.max(np.abs(eager.output() - expected)))
        eager.calibrate(min_repeat_ms)
    timer = vm.time_evaluator("main", dev, number=1, repeat=3, min_repeat_ms=min_repeat_ms)
    timer(x_dev)  # warm-up: first launches, allocations
    tvm_samples: list[float] = []
    torch_samples: list[float] = []
    for index in range(rounds):  # alternate which goes first, so neither always follows the other
        order = ("tvm", "torch") if index % 2 == 0 else ("torch", "tvm")
        for which in order:
            if which == "tvm":
                tvm_samples += list(timer(x_dev).results)
            elif eager is not None:
                torch_samples += eager.samples(3)
    result["tvm"] = spread(tvm_samples)
    if eager is not None:
        result["torch"] = spread(torch_samples)
        result["torch_threads"] = eager.torch.get_num_threads() if kind == "cpu" else None
        result["torch_version"] = eager.torch.__version__
    return result


def markdown(report: dict[str, Any]) -> str:
    where = report["device"]
    title = where["gpu"]["name"] if where["kind"] == "cuda" else where["cpu"]
    lines = [
        f"# TVM artifacts on {title}: runtime-only bundle vs PyTorch eager",
        "",
        f"Written by the bundle's run.py (tools/gpu_bundle_run.py) on {report['when']}; bundle built for "
        f"`{report['bundle']['device']}` with TVM {report['bundle']['tvm_version']} (runtime only: "
        f"{', '.join(report['runtime_libraries'])}; no libtvm_compiler.so).",
        "",
    ]
    if where["kind"] == "cuda":
        gpu = where["gpu"]
        lines += [
            f"GPU: {gpu['name']} (compute capability {gpu['compute_version']}), driver {gpu['driver']}; "
            f"host CPU {where['cpu']}; Python {where['python']}.",
            "",
        ]
    else:
        lines += [f"CPU: {where['cpu']}; Python {where['python']}.", ""]
    lines += [
        f"Timing: {report['rounds']} interleaved rounds, each 3 samples of TVM's `time_evaluator` and 3 of PyTorch "
        f"eager (fp32, TF32 off), a sample at least {report['min_repeat_ms']} ms of back-to-back calls on one "
        "input already on the device; median ± half the interquartile range, and the minimum. Outputs are compared "
        f"with PyTorch's output on the CPU stored at build time (tolerance {TOLERANCE}).",
        "",
        "| model | input | TVM ms | PyTorch eager ms | TVM / eager | TVM max abs diff | eager max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        tvm_ms = f"{m['tvm']['median_ms']:.4f} ± {m['tvm']['half_iqr_ms']:.4f} (min {m['tvm']['min_ms']:.4f})"
        if m["torch"] is not None:
            eager = f"{m['torch']['median_ms']:.4f} ± {m['torch']['half_iqr_ms']:.4f} (min {m['torch']['min_ms']:.4f})"
            ratio = f"{m['tvm']['median_ms'] / m['torch']['median_ms']:.3g}"
            eager_diff = f"{m['torch_max_abs_diff']:.2e}"
        else:
            eager, ratio, eager_diff = f"not timed: {m['torch_skipped']}", "-", "-"
        shape = "x".join(str(d) for d in m["input_shape"])
        verdict = "" if m["matches"] else " (MISMATCH)"
        lines.append(
            f"| {m['model']} | {shape} | {tvm_ms} | {eager} | {ratio} | {m['max_abs_diff']:.2e}{verdict} "
            f"| {eager_diff} |"
        )
    untuned = [m["model"] for m in report["models"] if report["bundle"]["trials"].get(m["model"]) == 0]
    if untuned:
        lines += ["", f"Untuned (TVM's default schedules, 0 tuning trials): {', '.join(untuned)}."]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    info = json.loads((HERE / "bundle.json").read_text())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=None, help="a subset of the bundle's models")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--min-repeat-ms", type=int, default=50, help="shortest timed sample (default 50 ms)")
    parser.add_argument(
        "--no-torch", action="store_true", help="skip PyTorch eager (checked against the stored output only)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for NAME.json and NAME.md")
    parser.add_argument("--name", default="result", help="file stem of the results (default 'result')")
    args = parser.parse_args(argv)
    try:
        if args.rounds < 1 or args.min_repeat_ms < 1:
            raise BundleError("--rounds and --min-repeat-ms must be at least 1")
        here = ".".join(platform.python_version_tuple()[:2])
        if here != info["python"]:
            raise BundleError(
                f"this bundle's tvm_ffi is built for Python {info['python']}, this is Python {here}: "
                f"run it with python{info['python']}, or build the bundle with --python-version {here}"
            )
        names = args.models if args.models is not None else info["models"]
        unknown = sorted(set(names) - set(info["models"]))
        if unknown:
            raise BundleError(f"not in this bundle: {', '.join(unknown)} (it holds {', '.join(info['models'])})")
        kind = info["runtime_kind"]  # cuda(0) or cpu(0): what the artifacts were built for
        if kind == "cuda" and not args.no_torch:
            with contextlib.suppress(ImportError):  # PyTorch first: its libcudart, known to suit it, is then shared
                import torch  # noqa: F401
        tvm = runtime_only_tvm()
        if kind == "cuda":
            load_cuda_runtime(tvm)
        report: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "bundle": {k: info[k] for k in ("device", "target", "tvm_version", "trials")},
            "runtime_only": bool(tvm.base._RUNTIME_ONLY),
            "runtime_libraries": sorted(p.name for p in (SITE / "tvm" / "lib").glob("*.so")),
            "device": {
                "kind": kind,
                "gpu": gpu_facts(tvm) if kind == "cuda" else None,
                "cpu": cpu_name(),
                "python": platform.python_version(),
            },
            "rounds": args.rounds,
            "min_repeat_ms": args.min_repeat_ms,
            "models": [],
        }
        for name in names:
            print(f"run.py: {name} on {kind}(0) ...", file=sys.stderr, flush=True)
            model = run_model(tvm, HERE / "models" / name, kind, args.rounds, args.min_repeat_ms, not args.no_torch)
            report["models"].append(model)
    except BundleError as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return 1
    write_atomic(args.out / f"{args.name}.json", json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    write_atomic(args.out / f"{args.name}.md", text)
    print(text)
    mismatched = [m["model"] for m in report["models"] if not m["matches"]]
    if mismatched:
        print(f"run.py: outputs differ from PyTorch's beyond {TOLERANCE}: {', '.join(mismatched)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
