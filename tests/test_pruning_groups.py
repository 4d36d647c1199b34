"""Channel groups and surgery on every zoo model: predicted costs match the real pruned module, pruning
channels that carry nothing leaves outputs unchanged (residual adds, depthwise, flatten -> linear)."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.models.io import load_model, to_graph_module
from edgeprune.pruning import cost, groups
from edgeprune.pruning.search import ChannelMasks

ZOO_CASES = [
    ("lenet5", (1, 16, 16), 0.5),
    ("resnet20", (1, 8, 8), 0.25),
    ("resnet56", (1, 8, 8), 0.25),
    ("mobilenetv2", (3, 8, 8), 0.25),
    ("vgg11", (1, 16, 16), 0.25),
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module


def _random_keep(structure: groups.Structure, seed: int) -> dict[str, list[int]]:
    rng = random.Random(seed)
    return {
        name: sorted(rng.sample(range(group.size), rng.randint(1, group.size)))
        for name, group in structure.groups.items()
    }


@pytest.mark.parametrize(("arch", "shape", "width"), ZOO_CASES)
def test_zoo_models_prune_and_costs_are_predicted_exactly(arch: str, shape: tuple, width: float) -> None:
    bundle = load_model(arch, shape, 10, width=width)
    structure = groups.analyze(bundle.module, shape)
    assert structure.groups, "every zoo model has prunable channels"
    assert {reason for _, reason in structure.excluded} == {"model output"}, "only the classifier is left out"
    assert cost.predict(structure, structure.sizes()) == cost.measure(bundle.module, shape)
    keep = _random_keep(structure, seed=1)
    counts = {name: len(kept) for name, kept in keep.items()}
    pruned = groups.prune(bundle.module, structure, keep)
    assert cost.predict(structure, counts) == cost.measure(pruned, shape)
    assert pruned(torch.zeros(2, *shape)).shape == (2, 10)  # the classifier keeps all its outputs
    for name in structure.classifier:
        assert structure.classifier and name not in [n for g in structure.groups.values() for n in g.layers]
    # the skeleton a latency model sees has exactly the surgery's shapes
    shell = groups.skeleton(bundle.module, structure, counts)
    assert {k: v.shape for k, v in shell.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}
    assert tuple(bundle.module(torch.zeros(1, *shape)).shape) == (1, 10)  # the input model is untouched


def _silence(module: nn.Module, structure: groups.Structure, name: str, channels: list[int]) -> None:
    """Make channels of a group carry nothing: zero filters, biases and BN scale / shift."""
    masks = ChannelMasks(module, structure)
    keep = {g: list(range(grp.size)) for g, grp in structure.groups.items()}
    keep[name] = [c for c in range(structure.groups[name].size) if c not in channels]
    masks.set(keep, structure.sizes())


@pytest.mark.parametrize(
    ("arch", "shape", "width", "pick"),
    [
        ("resnet20", (1, 8, 8), 0.5, "stem.0"),  # the residual stream of stage 1: stem + every block's conv2
        ("resnet20", (1, 8, 8), 0.5, "layers.6.conv2"),  # stage 3 stream, its first block with a 1x1 shortcut conv
        ("mobilenetv2", (3, 8, 8), 0.25, "features.10.block.0"),  # expand 1x1 + depthwise 3x3 + BNs
        ("mobilenetv2", (3, 8, 8), 0.25, "features.9.block.6"),  # projections summed by residual adds
        ("lenet5", (1, 16, 16), 0.5, "features.3"),  # conv -> flatten -> linear
    ],
)
def test_pruning_silent_channels_leaves_outputs_unchanged(arch: str, shape: tuple, width: float, pick: str) -> None:
    bundle = load_model(arch, shape, 10, width=width)
    module = bundle.module.eval()
    structure = groups.analyze(module, shape)
    group = structure.groups[pick]
    silent = list(range(0, group.size, 2))
    inputs = torch.randn(16, *shape, generator=torch.Generator().manual_seed(0))
    _calibrate_batchnorm(module, inputs)
    _silence(module, structure, pick, silent)
    with torch.no_grad():
        before = module(inputs)
        pruned = groups.prune(module, structure, {pick: [c for c in range(group.size) if c not in silent]})
        after = pruned.eval()(inputs)
        live = groups.prune(module, structure, {pick: [c for c in range(group.size) if c != 1]})
        changed = live.eval()(inputs)
    assert pruned.get_submodule(group.layers[0]).weight.shape[0] == group.size - len(silent)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(changed, before, rtol=1e-3, atol=1e-4), "control: removing a live channel shows"


def _calibrate_batchnorm(module: nn.Module, inputs: torch.Tensor) -> None:
    """BN statistics of real activations, so the signal survives the depth of an untrained net in eval mode."""
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.momentum = None  # cumulative average over the calibration passes
            layer.reset_running_stats()
    module.train()
    with torch.no_grad():
        module(inputs)
    module.eval()


def test_masks_compute_what_surgery_computes() -> None:
    bundle = load_model("mobilenetv2", (3, 8, 8), 10, width=0.25)
    module = bundle.module.eval()
    structure = groups.analyze(module, (3, 8, 8))
    keep = _random_keep(structure, seed=7)
    inputs = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pruned = groups.prune(module, structure, keep).eval()(inputs)
        ChannelMasks(module, structure).set(keep, structure.sizes())
        masked = module(inputs)
    torch.testing.assert_close(masked, pruned, rtol=1e-5, atol=1e-5)


class OnlyClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(x, 1))


def test_a_model_without_prunable_layers_is_refused() -> None:
    with pytest.raises(EdgepruneError, match="no prunable channels"):
        groups.analyze(to_graph_module(OnlyClassifier()), (1, 4, 4))


class Branches(nn.Module):
    """Two branches concatenated into one conv: the consumer's input channels belong to two groups."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(1, 10, 1), nn.BatchNorm2d(10), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(16, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(torch.cat([self.a(x), self.b(x)], dim=1))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def test_concatenated_branches_prune_consistently() -> None:
    module = to_graph_module(Branches()).eval()
    structure = groups.analyze(module, (1, 8, 8))
    assert dict(structure.layers["c.0"].in_groups) == {"a.0": 1, "b.0": 1}
    inputs = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    _calibrate_batchnorm(module, inputs)
    keep = {"a.0": [0, 2, 5], "b.0": [1, 2, 3, 9]}
    ChannelMasks(module, structure).set({**structure_keep_all(structure), **keep}, structure.sizes())
    with torch.no_grad():
        before = module(inputs)
        pruned = groups.prune(module, structure, keep).eval()
        torch.testing.assert_close(pruned(inputs), before, rtol=1e-5, atol=1e-5)
        live = groups.prune(module, structure, {"c.0": list(range(1, 12))}).eval()
        assert not torch.allclose(live(inputs), before, rtol=1e-3, atol=1e-4)
    assert pruned.get_submodule("c.0").in_channels == 7
    assert cost.predict(structure, {"a.0": 3, "b.0": 4}) == cost.measure(pruned, (1, 8, 8))


def structure_keep_all(structure: groups.Structure) -> dict[str, list[int]]:
    return {name: list(range(group.size)) for name, group in structure.groups.items()}
