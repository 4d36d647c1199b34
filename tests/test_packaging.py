"""Installing edgeprune prints no setuptools deprecation notice (`make demo` on a fresh clone showed a wall of them)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_metadata_builds_without_deprecation_warnings(tmp_path: Path) -> None:
    """The build backend itself, as pip runs it: any SetuptoolsDeprecationWarning is an error here."""
    if int(metadata.version("setuptools").split(".")[0]) < 77:
        pytest.skip("pyproject.toml needs setuptools >= 77 (the SPDX license string); pip's build env has it")
    source = tmp_path / "src"  # a copy: the backend writes edgeprune.egg-info next to pyproject.toml
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "edgeprune", source / "edgeprune", ignore=shutil.ignore_patterns("__pycache__"))
    build = (
        "import sys; from setuptools import build_meta; print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::setuptools.warnings.SetuptoolsDeprecationWarning", "-c", build, str(tmp_path)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Deprecat" not in result.stderr
    info = tmp_path / result.stdout.strip().splitlines()[-1] / "METADATA"
    assert "License-Expression: Apache-2.0" in info.read_text().splitlines()
