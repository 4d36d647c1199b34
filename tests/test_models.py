"""The model zoo and MODEL resolution: zoo names, a user's file:factory, saved files that load without code."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.models import zoo
from edgeprune.models.io import load_model, load_saved, parse_input_shape, save_model


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (1, 12, 20)])
def test_zoo_models_take_channels_size_and_classes(name: str, shape: tuple[int, int, int]) -> None:
    bundle = load_model(name, shape, num_classes=7, width=0.25)
    out = bundle.module(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert bundle.meta["arch"] == name and not bundle.trained
    assert any(isinstance(m, nn.Conv2d) for m in bundle.module.modules())


def test_mobilenetv2_has_depthwise_and_residuals() -> None:
    module = zoo.build("mobilenetv2", 3, (32, 32), 10)
    depthwise = [m for m in module.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    residual = [m for m in module.modules() if isinstance(m, zoo.InvertedResidual) and m.residual]
    assert depthwise and residual


def test_saved_model_loads_without_original_code(tmp_path: Path) -> None:
    user_file = tmp_path / "mynet.py"
    user_file.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(1, 8, 3, padding=1)
                    self.bn = nn.BatchNorm2d(8)
                    self.fc = nn.Linear(8, 3)

                def forward(self, x):
                    x = torch.relu(self.bn(self.conv(x)))
                    return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

            def build():
                return Net()
            """
        )
    )
    bundle = load_model(f"{user_file}:build", input_shape=(1, 12, 12))
    assert bundle.num_classes == 3
    saved = save_model(bundle, tmp_path / "net.pt")
    x = torch.randn(1, 1, 12, 12)
    expected = bundle.module.eval()(x)
    user_file.unlink()  # the architecture's code is gone; the saved file must still load and run
    script = (
        "import sys, torch\n"
        "from edgeprune.models.io import load_saved\n"
        f"b = load_saved({str(saved)!r})\n"
        f"torch.save(b.module.eval()(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})\n"
        "assert 'mynet' not in ' '.join(sys.modules)\n"
    )
    torch.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)


def _model_folder(folder: Path, width: int) -> Path:
    """A user's model file that imports its blocks from a module beside it, as `python net.py` allows."""
    folder.mkdir()
    (folder / "blocks.py").write_text(
        textwrap.dedent(
            f"""
            from torch import nn

            WIDTH = {width}

            class Stem(nn.Sequential):
                def __init__(self):
                    super().__init__(nn.Conv2d(1, WIDTH, 3, padding=1), nn.BatchNorm2d(WIDTH), nn.ReLU())
            """
        )
    )
    (folder / "net.py").write_text(
        textwrap.dedent(
            """
            from torch import nn
            from blocks import WIDTH, Stem

            def build():
                return nn.Sequential(Stem(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(WIDTH, 4))
            """
        )
    )
    return folder / "net.py"


def test_model_file_imports_modules_beside_it(tmp_path: Path) -> None:
    path_before = list(sys.path)
    widths = {}
    for width in (6, 10):  # two folders with a different blocks.py each: neither sees the other's
        net = _model_folder(tmp_path / f"model{width}", width)
        bundle = load_model(f"{net}:build", input_shape=(1, 8, 8))
        widths[width] = bundle.module.get_submodule("0.0").out_channels
        assert sys.path == path_before
        assert "blocks" not in sys.modules
    assert widths == {6: 6, 10: 10}


def test_zoo_model_round_trip_is_identical(tmp_path: Path) -> None:
    bundle = load_model("resnet20", (3, 16, 16), 10, width=0.25)
    bundle.meta["trained"] = True
    path = save_model(bundle, tmp_path / "r.pt")
    loaded = load_saved(path)
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(loaded.module.eval()(x), bundle.module.eval()(x))
    assert loaded.input_shape == (3, 16, 16) and loaded.trained
    assert load_model(str(path)).num_classes == 10


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("resnet99", {}, "unknown MODEL"),
        ("lenet5", {"input_shape": (3, 2, 2)}, "does not accept input"),
        ("missing.py:build", {"input_shape": (1, 8, 8)}, "not found"),
        ("thing.py", {"input_shape": (1, 8, 8)}, "name the factory"),
        ("resnet20", {"width": 0.0}, "width multiplier must be a positive"),
        ("resnet20", {"width": float("nan")}, "width multiplier must be a positive"),
        ("resnet20", {"num_classes": 0}, "at least one class"),
        ("resnet20", {"num_classes": -1}, "at least one class"),
    ],
)
def test_bad_model_arguments(spec: str, kwargs: dict, message: str) -> None:
    with pytest.raises(EdgepruneError, match=message):
        load_model(spec, **kwargs)


def test_not_a_model_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    torch.save({"weights": 1}, path)
    with pytest.raises(EdgepruneError, match="not an edgeprune model file"):
        load_saved(path)


def test_parse_input_shape() -> None:
    assert parse_input_shape("3x32x32") == (3, 32, 32)
    assert parse_input_shape("1,8,8") == (1, 8, 8)
    for bad in ("32x32", "3x0x4", "axbxc"):
        with pytest.raises(EdgepruneError):
            parse_input_shape(bad)
