"""The examples a user copies run as they are, on a few hundred images: they use only `import edgeprune`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

import edgeprune

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(script: str, *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def saved_params(path: Path) -> int:
    return sum(p.numel() for p in torch.load(path, weights_only=False).parameters())


def test_the_examples_use_only_the_public_api() -> None:
    for script in EXAMPLES.glob("*.py"):
        imports = [line for line in script.read_text().splitlines() if "edgeprune" in line and "import" in line]
        assert imports == ["import edgeprune as ep"], script.name
    assert callable(edgeprune.prune)


def test_train_and_prune_with_a_plain_training_loop(tmp_path: Path) -> None:
    out = run_example(
        "train_and_prune.py", "--limit", "200", "--epochs", "1", "--population", "3", "--generations", "1",
        "--out", "small.pt", cwd=tmp_path,
    )  # fmt: skip
    assert "within budget True" in out and "accuracy" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("parameters"))
    before, after = (int(part.replace(",", "")) for part in line.split()[1::2])
    assert saved_params(tmp_path / "small.pt") == after < before  # saved as printed, and smaller


def test_prune_a_model_file_that_imports_a_module_beside_it(tmp_path: Path) -> None:
    (tmp_path / "blocks.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def conv_block(cin, cout):
                return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
            """
        )
    )
    (tmp_path / "net.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            from blocks import conv_block

            def build():
                return nn.Sequential(conv_block(3, 32), conv_block(32, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(32, 10))
            """
        )
    )
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()  # run from another folder: net.py's own folder is what makes `from blocks import` work
    out = run_example(
        "prune_model_file.py", f"{tmp_path / 'net.py'}:build", "--input-shape", "3x16x16", "--flops", "40%",
        "--out", "small.pt", cwd=elsewhere,
    )  # fmt: skip
    assert "within budget True" in out
    original = 3 * 32 * 9 + 32 + 2 * 32 + 32 * 32 * 9 + 32 + 2 * 32 + 32 * 10 + 10
    assert saved_params(elsewhere / "small.pt") < original
