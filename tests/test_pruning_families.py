"""Every CNN family of tests/family_models.py prunes to half its FLOPs through the library path of
`edgeprune prune MODEL --target-flops 50% --method global`, with its forward intact: removing silenced
channels leaves the outputs unchanged, the saved pruned model reloads without the models' code, and the
latency table's signatures cover every pruned layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.data import Dataset, load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import load_model, save_model, to_graph_module
from edgeprune.network import GROUPED
from edgeprune.profiling.signature import LayerExtractor
from edgeprune.pruning import PruneSettings, TrainSettings, cost, groups, parse_target, prune_bundle
from edgeprune.pruning.search import ChannelMasks
from tests.test_pruning_groups import _calibrate_batchnorm

SHAPE = (3, 16, 16)
MODELS = Path(__file__).with_name("family_models.py")
FACTORIES = {
    "split_shuffle": "SplitShuffleNet",
    "grouped": "GroupedNet",
    "dual_path": "DualPathNet",
    "nas_cells": "CellNet",
}

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module


@pytest.fixture(scope="module")
def data() -> Dataset:
    return load_dataset("digits", SHAPE, seed=0)


def _load(family: str):  # noqa: ANN202 - a ModelBundle
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what is left out is checked in its own test
        return load_model(f"{MODELS}:{FACTORIES[family]}", SHAPE, 10)


@pytest.mark.parametrize("family", FACTORIES)
def test_family_prunes_to_half_its_flops(family: str, data: Dataset, tmp_path: Path) -> None:
    bundle = _load(family)
    settings = PruneSettings(method="global", finetune=TrainSettings(epochs=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned, summary = prune_bundle(bundle, data, parse_target("flops", "50%"), settings)
    assert summary["within_budget"] and summary["flops"] <= 0.5 * summary["original_flops"]
    assert (summary["flops"], summary["params"]) == cost.measure(pruned.module, SHAPE)
    assert not any("not pruned" in note for note in summary["notes"]), "every family prunes whole"
    inputs = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = pruned.module.eval()(inputs)
    assert expected.shape == (4, 10)

    # saved and reloaded in a fresh interpreter that cannot import the models' code
    saved = save_model(pruned, tmp_path / "pruned.pt")
    torch.save(inputs, tmp_path / "inputs.pt")
    script = (
        "import sys, torch\n"
        "from edgeprune.models.io import load_saved\n"
        "assert 'family_models' not in sys.modules\n"
        f"bundle = load_saved({str(saved)!r})\n"
        f"out = bundle.module.eval()(torch.load({str(tmp_path / 'inputs.pt')!r}))\n"
        f"torch.save(out, {str(tmp_path / 'out.pt')!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env, timeout=300)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected)

    # the latency table's signatures cover every layer of the pruned model, grouped convs with their groups
    layers = LayerExtractor().layers(pruned.module, SHAPE)
    modules = dict(pruned.module.named_modules())
    convs = {n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {layer.name for layer in layers} == convs
    for layer in layers:
        module = modules[layer.name]
        if isinstance(module, nn.Conv2d):
            assert (layer.in_channels, layer.out_channels) == (module.in_channels, module.out_channels)
            if module.groups > 1 and not module.groups == module.in_channels == module.out_channels:
                assert layer.family.kind == GROUPED and layer.family.groups == module.groups
        assert layer.macs > 0
    json.dumps([layer.key for layer in layers])


@pytest.mark.parametrize("family", FACTORIES)
def test_removing_silent_channels_leaves_outputs_unchanged(family: str) -> None:
    module = _load(family).module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = groups.analyze(module, SHAPE)
    assert {reason for _, reason in structure.excluded} == {"model output"}, "only the classifier is left out"
    inputs = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(1))
    _calibrate_batchnorm(module, inputs)
    rng = torch.Generator().manual_seed(2)
    keep = {
        name: sorted(torch.randperm(group.size, generator=rng)[: max(1, group.size // 2)].tolist())
        for name, group in structure.groups.items()
    }
    with torch.no_grad():
        ChannelMasks(module, structure).set(keep, structure.sizes())
        before = module(inputs)
        pruned = groups.prune(module, structure, keep).eval()
        after = pruned(inputs)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5 * float(before.abs().max()))
    counts = {name: len(kept) for name, kept in keep.items()}
    assert cost.predict(structure, counts) == cost.measure(pruned, SHAPE)
    shell = groups.skeleton(module, structure, counts)  # what a latency model looks at: the same shapes
    assert {k: v.shape for k, v in shell.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}
    assert shell(inputs).shape == (8, 10)


class ChannelsToSpace(nn.Module):
    """A channel-to-space rearrangement (PixelShuffle): which channel lands where is beyond the channel trace."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.up = nn.PixelShuffle(2)
        self.b = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(self.up(self.a(x))).mean(dim=(2, 3)))


def test_what_cannot_be_pruned_is_named_with_a_warning() -> None:
    module = to_graph_module(ChannelsToSpace(), SHAPE)
    with pytest.warns(UserWarning, match=r"not pruned \(PixelShuffle 'up' cannot be resized\): a\.0"):
        structure = groups.analyze(module, SHAPE)
    assert dict(structure.excluded) == {"a.0": "PixelShuffle 'up' cannot be resized", "fc": "model output"}
    assert list(structure.groups) == ["b.0"]


class Untraceable(nn.Module):
    """A split size computed as a Python int, and tuple unpacking of x.size(): fx cannot trace either."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, _, _ = x.size()
        y = self.conv(x)[:, : int(channels * 4 / 3)]
        return self.fc(y.mean(dim=(2, 3)).view(batch, -1))


def test_tracing_with_example_shapes_keeps_the_batch_free() -> None:
    with pytest.raises(EdgepruneError, match="cannot trace"):
        to_graph_module(Untraceable())
    module = Untraceable().eval()
    traced = to_graph_module(module, SHAPE)
    inputs = torch.randn(5, *SHAPE)
    torch.testing.assert_close(traced(inputs), module(inputs))


class WithGroupNorm(nn.Module):
    """One conv feeds a GroupNorm (not resizable here), the other a BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(self.a(x)).mean(dim=(2, 3)))


def test_unknown_modules_and_the_time_limit_leave_layers_out_cleanly() -> None:
    module = to_graph_module(WithGroupNorm(), SHAPE)
    with pytest.warns(UserWarning, match=r"GroupNorm 'a\.1' cannot be resized\): a\.0"):
        structure = groups.analyze(module, SHAPE)
    assert list(structure.groups) == ["b.0"]
    with pytest.raises(EdgepruneError, match="no prunable channels") as caught:
        groups.analyze(module, SHAPE, time_limit=0.0)  # nothing checked in time: nothing offered, no hang
    assert "analysis time limit reached): b.0" in str(caught.value)
