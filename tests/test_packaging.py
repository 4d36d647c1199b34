"""Installing edgeprune prints no setuptools deprecation notice (`make demo` on a fresh clone showed a wall of them)."""

from __future__ import annotations

import json
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


def test_an_installed_package_keeps_user_data_outside_it(tmp_path: Path) -> None:
    """A non-editable install (`pip install .`): the shipped boards come as package data, and LUTs and tuning
    databases resolve to the user's data folder, never into site-packages."""
    if int(metadata.version("setuptools").split(".")[0]) < 77:
        pytest.skip("pyproject.toml needs setuptools >= 77 (the SPDX license string)")
    source, site, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    source.mkdir()
    elsewhere.mkdir()  # a working folder without ./device_profiles
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "edgeprune", source / "edgeprune", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)
    script = (
        "import edgeprune, json; from edgeprune.devices.profile import load_device, profiles_dir\n"
        "d = load_device('raspberry-pi-4')\n"
        "print(json.dumps([edgeprune.__file__, str(profiles_dir()), str(d.lut_dir), str(d.source)]))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "PYTHONPATH": str(site)}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    package, folder, lut_dir, profile = (Path(p) for p in json.loads(result.stdout))
    assert package.is_relative_to(site)  # the installed copy, not the checkout
    assert profile.is_relative_to(site / "edgeprune" / "boards")
    assert folder == tmp_path / "data" / "edgeprune" and lut_dir == folder / "raspberry-pi-4"
