"""The artifact folder `compile` writes and `verify` and `deploy` read.

A folder holds the compiled library (`model.so`, or `model.tar` that the board links), `model.onnx`, a seeded
reference input with PyTorch's output for it (so outputs are checked on the device without the source model),
and `manifest.json`. The manifest is the contract between stages, read on other machines too: its shape is
fixed by FORMAT/VERSION and it lists every file with its sha256, so a changed or half-copied folder is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import atomic
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import file_sha256
from edgeprune.tvmx.export import INPUT_NAME

FORMAT = "edgeprune-artifact"
VERSION = 1
MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
REFERENCE_INPUT = "reference_input.npy"
REFERENCE_OUTPUT = "reference_output.npy"
VERIFY_FILE = "verify.json"
DTYPE = "float32"

_SAFE_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "library": str,
    "onnx": str,
    "input": dict,
    "output": dict,
    "target": dict,
    "device": str,
    "tvm_version": str,
    "tuning": dict,
    "source_model": dict,
    "pruning": (dict, type(None)),
    "predicted_ms": (float, int, type(None)),
    "files": dict,
}


@dataclass(frozen=True)
class Artifact:
    """A validated artifact folder: every file listed in the manifest is present with its sha256."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def library(self) -> Path:
        return self.folder / self.manifest["library"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["input"]["shape"])

    @property
    def target(self) -> dict[str, Any]:
        return dict(self.manifest["target"])

    @property
    def device(self) -> str:
        return str(self.manifest["device"])

    @property
    def predicted_ms(self) -> float | None:
        value = self.manifest["predicted_ms"]
        return None if value is None else float(value)

    @property
    def pruning_target_ms(self) -> float | None:
        """The latency budget the model was pruned to, when the pruner recorded one."""
        value = (self.manifest["pruning"] or {}).get("target_ms")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The reference input and PyTorch's output for it, written at compile time."""
        return np.load(self.folder / REFERENCE_INPUT), np.load(self.folder / REFERENCE_OUTPUT)


def _fail(folder: Path, problem: str) -> EdgepruneError:
    return EdgepruneError(
        f"{folder / MANIFEST}: {problem}", hint="pass a folder written by `edgeprune compile`, or compile again"
    )


def _check_manifest(folder: Path, manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _fail(folder, f"not an edgeprune artifact manifest (format != '{FORMAT}')")
    if manifest.get("version") != VERSION:
        raise _fail(folder, f"manifest version {manifest.get('version')!r}; this edgeprune reads version {VERSION}")
    for key, kind in _REQUIRED.items():
        if key not in manifest:
            raise _fail(folder, f"field '{key}' is missing")
        if not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
            raise _fail(folder, f"field '{key}' has type {type(manifest[key]).__name__}")
    for section in ("input", "output"):
        shape = manifest[section].get("shape")
        if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d > 0 for d in shape)):
            raise _fail(folder, f"{section}.shape must be a list of positive integers, got {shape!r}")
        if manifest[section].get("dtype") != DTYPE:
            raise _fail(folder, f"{section}.dtype must be '{DTYPE}'")
    files = manifest["files"]
    for name in (manifest["library"], manifest["onnx"], REFERENCE_INPUT, REFERENCE_OUTPUT):
        if name not in files:
            raise _fail(folder, f"'{name}' is not listed under 'files'")
    for name in files:
        if not _SAFE_FILE.match(name):
            raise _fail(folder, f"file name '{name}' is not a plain file name")


def load_artifact(folder: str | Path) -> Artifact:
    """Read and validate an artifact folder; every listed file must match its sha256."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise EdgepruneError(
            f"{folder} is not an artifact folder (no {MANIFEST})", hint="pass the folder `edgeprune compile -o` wrote"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(folder, f"unreadable: {exc}") from exc
    _check_manifest(folder, manifest)
    for name, digest in manifest["files"].items():
        file = folder / name
        if not file.is_file():
            raise _fail(folder, f"'{name}' is listed but missing")
        if file_sha256(file) != digest:
            raise EdgepruneError(
                f"{file}: sha256 differs from the manifest's",
                hint="the artifact was changed after compile; compile it again",
            )
    return Artifact(folder, manifest)


def check_output_folder(folder: Path) -> None:
    """Only an earlier artifact (or nothing) may be replaced: `-o ~/` must never delete a home folder."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise EdgepruneError(f"output {folder} exists and is not a folder", hint="choose another -o")
    if any(folder.iterdir()) and not (folder / MANIFEST).is_file():
        raise EdgepruneError(
            f"output folder {folder} is not empty and holds no artifact; refusing to replace it",
            hint="choose a new or empty folder for -o",
        )


def write_artifact(
    folder: Path,
    export_library: Callable[[Path], Path],
    onnx_bytes: bytes,
    reference_input: np.ndarray,
    reference_output: np.ndarray,
    fields: dict[str, Any],
) -> Artifact:
    """Write the folder atomically: all of it appears at once, or nothing changes.

    `export_library(directory)` writes the library there and returns its path; `fields` are the manifest's
    keys other than format, version, library, onnx, input/output and files.
    """
    folder = Path(folder)
    check_output_folder(folder)
    with atomic.atomic_dir(folder) as tmp:
        library = export_library(tmp)
        (tmp / ONNX_FILE).write_bytes(onnx_bytes)
        np.save(tmp / REFERENCE_INPUT, np.ascontiguousarray(reference_input, dtype=DTYPE))
        np.save(tmp / REFERENCE_OUTPUT, np.ascontiguousarray(reference_output, dtype=DTYPE))
        names = [library.name, ONNX_FILE, REFERENCE_INPUT, REFERENCE_OUTPUT]
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "library": library.name,
            "onnx": ONNX_FILE,
            "input": {"name": INPUT_NAME, "shape": list(reference_input.shape), "dtype": DTYPE},
            "output": {"shape": list(reference_output.shape), "dtype": DTYPE},
            **fields,
            "files": {name: file_sha256(tmp / name) for name in names},
        }
        _check_manifest(tmp, manifest)
        atomic.write_json(tmp / MANIFEST, manifest)
        (tmp / MANIFEST).chmod(0o644)  # temp files are created private; an artifact is meant to be shared
        tmp.chmod(0o755)
    return load_artifact(folder)
