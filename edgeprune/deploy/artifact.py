"""Read and check an artifact folder before it leaves this machine.

The compile stage writes `manifest.json` with the sha256 of every file it produced; a file that no longer
matches (edited, truncated, half-copied) is refused here rather than discovered on the board.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError

FORMAT = "edgeprune-artifact"
VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Artifact:
    folder: Path
    name: str
    manifest: dict[str, Any]
    hashes: dict[str, str]  # every regular file to upload -> sha256
    sizes: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_name(name: str) -> str:
    if not _SAFE_NAME.match(name):
        raise EdgepruneError(
            f"'{name}' cannot name a folder on the board",
            hint="use letters, digits, '.', '_' and '-' (not starting with '.'); set it with --name",
        )
    return name


def _require(manifest: dict[str, Any], path: Path, field: str, kind: type) -> Any:
    value = manifest.get(field)
    if not isinstance(value, kind):
        raise EdgepruneError(f"{path}: field '{field}' missing or not a {kind.__name__}")
    return value


def load_artifact(folder: str | Path, name: str | None = None) -> Artifact:
    """The artifact folder's manifest and files, each file checked against the manifest's sha256."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise EdgepruneError(
            f"{folder} is not an artifact folder (no manifest.json)",
            hint="pass the folder `edgeprune compile` wrote",
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EdgepruneError(f"{manifest_path}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EdgepruneError(f"{manifest_path}: not an edgeprune artifact manifest (format != '{FORMAT}')")
    if manifest.get("version") != VERSION:
        raise EdgepruneError(
            f"{manifest_path}: manifest version {manifest.get('version')!r}, this edgeprune reads {VERSION}",
            hint="recompile the model with this edgeprune version",
        )
    library = _require(manifest, manifest_path, "library", str)
    shape = _require(manifest, manifest_path, "input", dict).get("shape")
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d > 0 for d in shape)):
        raise EdgepruneError(f"{manifest_path}: input.shape must be a list of positive integers, got {shape!r}")
    expected = _require(manifest, manifest_path, "files", dict)
    if library not in expected:
        raise EdgepruneError(f"{manifest_path}: the library '{library}' is not listed under 'files'")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    hashes = {p.name: sha256_file(p) for p in files}
    for filename, digest in expected.items():
        if filename not in hashes:
            raise EdgepruneError(f"{folder}: '{filename}' is listed in the manifest but missing")
        if hashes[filename] != digest:
            raise EdgepruneError(
                f"{folder / filename}: sha256 {hashes[filename][:12]}... differs from the manifest's {digest[:12]}...",
                hint="the artifact was changed after compile; compile it again",
            )
    return Artifact(
        folder=folder,
        name=check_name(name or folder.resolve().name),
        manifest=manifest,
        hashes=hashes,
        sizes={p.name: p.stat().st_size for p in files},
    )
