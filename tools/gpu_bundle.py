"""Write a runtime-only TVM bundle: what runs edgeprune's compiled artifacts on another x86-64 Linux machine.

The GPU machine this is for (tools/check_gpu.sh) has Python 3.12, numpy and PyTorch but no TVM, and a run
there carries at most 64 MiB of the working tree: TVM's wheel (its 259 MB compiler library) cannot travel, its
runtime can. The bundle holds
  site/tvm/        TVM's Python files the runtime path imports and `lib/libtvm_runtime*.so` (never
                   libtvm_compiler.so: `import tvm` then runs runtime-only, TVM_USE_RUNTIME_LIB=1);
  site/tvm_ffi/    TVM's FFI for the target Python (fetched with `pip download` for another version, cached);
  site/typing_extensions.py   tvm_ffi's one pure-Python dependency;
  models/NAME/     each artifact's library, reference input and PyTorch's output for it, its manifest, and
                   the PyTorch model (edgeprune's saved format) for the eager comparison;
  run.py           tools/gpu_bundle_run.py: checks outputs on cuda(0) or cpu(0) and times TVM against PyTorch
                   eager, interleaved; writes JSON + markdown;
  bundle.json      what was built for what.
Models are compiled untuned (TVM's default GPU schedules) by edgeprune's compile stage and cached, so a rerun
only copies. The folder appears whole or not at all, and a bundle over --max-mib is refused.

    .venv/bin/python tools/gpu_bundle.py                          # build/gpu-bundle: resnet20 + mobilenetv2, h100-sm90
    .venv/bin/python tools/gpu_bundle.py OUT --device local --python-version 3.11 --model lenet5 --input-shape 1x8x8
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).resolve().parent / "gpu_bundle_run.py"
FORMAT = "edgeprune-runtime-bundle"
DEFAULT_OUT = ROOT / "build" / "gpu-bundle"
DEFAULT_CACHE = ROOT / "build" / "gpu-bundle-cache"
DEFAULT_DEVICE = "h100-sm90"
DEFAULT_MODELS = ("resnet20", "mobilenetv2")
DEFAULT_PYTHON = "3.12"  # the GPU machine's
# The device tool carries at most 64 MiB: the bundle plus the working tree it travels with (about 2 MiB).
DEFAULT_MAX_MIB = 60.0
FFI_PLATFORM = "manylinux_2_28_x86_64"
# Folders of the tvm and tvm_ffi packages the runtime never imports: the compiler's Python (Relax, TIR
# schedules, TOPI, contrib), sources, headers and the tvm_ffi build helpers.
SKIPPED_FOLDERS = {
    "tvm": {"relax", "s_tir", "topi", "contrib", "web", "testing", "3rdparty", "src", "include", "lib64", "cmake"},
    "tvm_ffi": {"3rdparty", "src", "include", "cython", "share", "cmake", "stub"},
}
# Native files each package needs at run time (tvm_ffi's core extension links libtvm_ffi_testing.so too).
NATIVE = {
    "tvm": ("lib/libtvm_runtime.so", "lib/libtvm_runtime_extra.so", "lib/libtvm_runtime_cuda.so"),
    "tvm_ffi": ("lib/libtvm_ffi.so", "lib/libtvm_ffi_testing.so"),
}
ARTIFACT_FILES = ("manifest.json", "reference_input.npy", "reference_output.npy")  # plus the library


def fail(message: str) -> SystemExit:
    return SystemExit(f"gpu_bundle: {message}")


def package_dir(name: str) -> Path:
    """An installed package's folder, found without importing it (importing tvm loads its compiler)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise fail(f"{name} is not installed in {sys.executable} (run this with edgeprune's venv)")
    return Path(spec.origin).parent


def distribution_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def wanted(package: str, relative: str) -> bool:
    """Whether a file of `package` (path relative to the package folder) belongs in the bundle."""
    parts = relative.split("/")
    if parts[0] in SKIPPED_FOLDERS[package] or "__pycache__" in parts:
        return False
    if package == "tvm" and parts[0] == "backend" and len(parts) > 2:
        return False  # tvm.backend's loaders only: each backend's codegen Python is the compiler's
    if relative in NATIVE[package]:
        return True
    return relative.endswith(".py") or (package == "tvm_ffi" and len(parts) == 1 and relative.endswith(".so"))


def copy_installed(package: str, site: Path) -> None:
    """The running Python's installed `package`, filtered by `wanted`."""
    source = package_dir(package)
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source).as_posix()
        if path.is_file() and wanted(package, relative):
            target = site / package / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    missing = [n for n in NATIVE[package] if not (site / package / n).is_file()]
    if missing:
        raise fail(f"{source} lacks {', '.join(missing)}: not the apache-tvm build edgeprune pins")


def ffi_wheel(python_version: str, cache: Path) -> Path:
    """apache-tvm-ffi (the installed version) for CPython `python_version` on x86-64 Linux, from pip's usual
    sources into `cache` once."""
    version = distribution_version("apache-tvm-ffi")
    tag = "cp" + python_version.replace(".", "")
    folder = cache / "wheels"
    found = sorted(folder.glob(f"apache_tvm_ffi-{version}-{tag}-*.whl"))
    if found:
        return found[0]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"apache-tvm-ffi=={version}",
        "--no-deps",
        "--only-binary=:all:",
        "--platform",
        FFI_PLATFORM,
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--abi",
        tag,
        "-d",
        str(folder),
    ]
    print(f"gpu_bundle: fetching apache-tvm-ffi {version} for Python {python_version} (pip download)", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(folder.glob(f"apache_tvm_ffi-{version}-{tag}-*.whl"))
    if done.returncode != 0 or not found:
        raise fail(
            f"pip could not fetch apache-tvm-ffi {version} for Python {python_version} ({FFI_PLATFORM}): "
            f"{(done.stderr or done.stdout).strip()[-800:]}\n  or put the wheel into {folder} by hand"
        )
    return found[0]


def extract_ffi(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            package, _, relative = member.partition("/")
            if package == "tvm_ffi" and relative and not member.endswith("/") and wanted("tvm_ffi", relative):
                target = site / member
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))
                target.chmod(0o755 if member.endswith(".so") else 0o644)


def write_runtime(site: Path, python_version: str, cache: Path) -> None:
    """TVM's runtime, tvm_ffi for `python_version` and typing_extensions into `site`."""
    copy_installed("tvm", site)
    if python_version == platform.python_version().rsplit(".", 1)[0]:
        copy_installed("tvm_ffi", site)
    else:
        extract_ffi(ffi_wheel(python_version, cache), site)
    shutil.copy2(package_dir("typing_extensions") / "typing_extensions.py", site / "typing_extensions.py")


def artifact_key(device: Any, spec: str, width: float, input_shape: str | None, trials: int) -> str:
    """What a cached artifact was built from: device target, model (a saved file's contents), width, shape,
    trials, TVM version."""
    from edgeprune.models.io import file_sha256

    model = file_sha256(spec) if Path(spec).is_file() else spec
    text = json.dumps(
        [device.name, device.target, model, width, input_shape, trials, distribution_version("apache-tvm")],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_name(spec: str) -> str:
    return Path(spec.partition(":")[0]).stem if spec.endswith((".py", ".pt")) or ":" in spec else spec


def cached_artifact(device: Any, spec: str, width: float, input_shape: str | None, trials: int, cache: Path) -> Path:
    """The artifact of `spec` for `device` (compiled by edgeprune's compile stage, reused when its cache
    folder is complete) beside the PyTorch model it was compiled from, saved in edgeprune's format."""
    import torch

    from edgeprune.compile.artifacts import load_artifact
    from edgeprune.compile.compiler import compile_model
    from edgeprune.errors import EdgepruneError
    from edgeprune.models.io import load_model, parse_input_shape, save_model

    folder = cache / "artifacts" / f"{model_name(spec)}-{artifact_key(device, spec, width, input_shape, trials)}"
    try:
        load_artifact(folder / "artifact")
        if (folder / "torch_model.pt").is_file():
            print(f"gpu_bundle: {spec}: reusing {folder}", flush=True)
            return folder
    except EdgepruneError:
        pass
    print(f"gpu_bundle: {spec}: compiling for {device.name} ({trials} trials per task)", flush=True)
    torch.manual_seed(0)  # a zoo model's initial weights: the same network in every build
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        bundle = load_model(spec, parse_input_shape(input_shape) if input_shape else None, None, width)
        result = compile_model(bundle, device, folder / "artifact", trials_per_task=trials, source=spec)
    except EdgepruneError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise fail(f"{spec}: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")) from exc
    print(
        f"gpu_bundle: {spec}: compiled in {result.seconds:.0f} s; on this CPU max |diff| to PyTorch "
        f"{result.max_abs_diff:.1e}",
        flush=True,
    )
    save_model(bundle, folder / "torch_model.pt")
    return folder


def copy_model(cached: Path, target: Path) -> None:
    manifest = json.loads((cached / "artifact" / "manifest.json").read_text())
    target.mkdir(parents=True)
    for name in (*ARTIFACT_FILES, manifest["library"]):
        shutil.copy2(cached / "artifact" / name, target / name)
    shutil.copy2(cached / "torch_model.pt", target / "torch_model.pt")


def files(folder: Path) -> Iterator[Path]:
    return (p for p in folder.rglob("*") if p.is_file())


def mib(paths: Iterator[Path]) -> float:
    return sum(p.stat().st_size for p in paths) / 2**20


def size_report(bundle: Path, max_mib: float) -> float:
    """Print the bundle's size by part; refuse it when over `max_mib`."""
    site = bundle / "site"
    parts = {
        "TVM runtime libraries": mib((site / "tvm" / "lib").glob("*.so")),
        "TVM Python files": mib(p for p in files(site / "tvm") if p.suffix == ".py"),
        "tvm_ffi": mib(files(site / "tvm_ffi")),
        **{f"model {m.name}": mib(files(m)) for m in sorted((bundle / "models").iterdir())},
    }
    total = mib(files(bundle))
    for name, size in parts.items():
        print(f"  {name:28s} {size:7.2f} MiB")
    print(f"  {'total':28s} {total:7.2f} MiB (limit {max_mib:g} MiB)")
    if total > max_mib:
        raise fail(f"the bundle is {total:.1f} MiB, over the {max_mib:g} MiB limit (--max-mib): carry fewer models")
    return total


def check_out(out: Path) -> None:
    """Only an earlier bundle (or nothing) may be replaced."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "bundle.json").is_file())):
        raise fail(f"{out} exists and is not a bundle folder; refusing to replace it (choose another OUT)")


def build(args: argparse.Namespace) -> Path:
    from edgeprune import atomic
    from edgeprune.devices.profile import load_device
    from edgeprune.errors import EdgepruneError

    out: Path = args.out.resolve()
    check_out(out)
    try:
        device = load_device(args.device)
    except EdgepruneError as exc:
        raise fail(exc.message + (f" ({exc.hint})" if exc.hint else "")) from exc
    if device.architecture != "x86_64":
        raise fail(f"{device.name} runs on {device.architecture}: this bundle carries x86-64 Linux runtime libraries")
    names = [model_name(spec) for spec in args.model]
    if len(set(names)) != len(names):
        raise fail(f"two models share a name: {', '.join(names)}")
    cached = [cached_artifact(device, s, args.width, args.input_shape, args.trials, args.cache) for s in args.model]
    with atomic.atomic_dir(out) as tmp:
        write_runtime(tmp / "site", args.python_version, args.cache)
        for name, folder in zip(names, cached, strict=True):
            copy_model(folder, tmp / "models" / name)
        shutil.copy2(RUNNER, tmp / "run.py")
        info = {
            "format": FORMAT,
            "device": device.name,
            "target": device.target,
            "runtime_kind": device.runtime_kind,
            "python": args.python_version,
            "tvm_version": distribution_version("apache-tvm"),
            "tvm_ffi_version": distribution_version("apache-tvm-ffi"),
            "models": names,
            "trials": dict.fromkeys(names, args.trials),
        }
        atomic.write_json(tmp / "bundle.json", info)
        print(f"gpu_bundle: {out}")
        size_report(tmp, args.max_mib)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help=f"bundle folder (default {DEFAULT_OUT})")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help=f"device profile (default {DEFAULT_DEVICE})")
    parser.add_argument(
        "--model", action="append", help=f"MODEL to carry, repeatable (default {' '.join(DEFAULT_MODELS)})"
    )
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier for zoo models (default 1.0)")
    parser.add_argument("--input-shape", help="CxHxW of one image (default the model's: 3x32x32 for the zoo)")
    parser.add_argument(
        "--trials",
        type=int,
        default=0,
        help="tuning trials per task (default 0: TVM's default schedules; tuning needs the device)",
    )
    parser.add_argument(
        "--python-version", default=DEFAULT_PYTHON, help=f"the target machine's Python, X.Y (default {DEFAULT_PYTHON})"
    )
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help=f"compiled artifacts and wheels (default {DEFAULT_CACHE})"
    )
    parser.add_argument(
        "--max-mib", type=float, default=DEFAULT_MAX_MIB, help=f"refuse a larger bundle (default {DEFAULT_MAX_MIB:g})"
    )
    args = parser.parse_args(argv)
    args.model = args.model or list(DEFAULT_MODELS)
    if args.trials < 0:
        parser.error("--trials must be 0 or more")
    if not (len(args.python_version.split(".")) == 2 and all(p.isdigit() for p in args.python_version.split("."))):
        parser.error(f"--python-version {args.python_version}: expected X.Y, e.g. 3.12")
    return args


def main(argv: list[str] | None = None) -> int:
    build(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
