"""What `deploy` sends: an artifact folder that `compile.artifacts.load_artifact` accepts (manifest and every
listed sha256), every regular file in it with its digest (the board hashes them back), and its name there.

A file that no longer matches the manifest (edited, truncated, half-copied) is refused here rather than
discovered on the board.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune.compile.artifacts import load_artifact
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import file_sha256

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Upload:
    folder: Path
    name: str  # the folder's name on the board
    manifest: dict[str, Any]
    hashes: dict[str, str]  # every regular file to upload -> sha256
    sizes: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


def check_name(name: str) -> str:
    if not _SAFE_NAME.match(name):
        raise EdgepruneError(
            f"'{name}' cannot name a folder on the board",
            hint="use letters, digits, '.', '_' and '-' (not starting with '.'); set it with --name",
        )
    return name


def board_name(text: str) -> str:
    """`text` made into a name `check_name` accepts: other characters become '-', no leading '.' or '-'."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text).lstrip(".-") or "run"


def load_upload(folder: str | Path, name: str | None = None) -> Upload:
    """The checked artifact folder and the digest of every file that will be uploaded (the manifest's for the
    files it lists, which `load_artifact` has just verified; the others, e.g. the manifest itself, hashed here)."""
    artifact = load_artifact(folder)
    listed = artifact.manifest["files"]
    files = sorted(p for p in artifact.folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return Upload(
        folder=artifact.folder,
        name=check_name(name or artifact.folder.resolve().name),
        manifest=artifact.manifest,
        hashes={p.name: listed.get(p.name) or file_sha256(p) for p in files},
        sizes={p.name: p.stat().st_size for p in files},
    )
