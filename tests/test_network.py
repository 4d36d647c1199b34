"""One description of a network's layers (`edgeprune.network`): its MAC / param counter checked by hand on a
small network, and against what the separate counters before it gave on the zoo and the CNN families.

`network_counts_15efe40.json` was written at commit 15efe40 by the code this module replaced (profiling's
`Family.macs` and `LayerExtractor`, pruning's `cost.predict` over hook-measured output pixels and the
forward-hook `cost.measure`): per model the structure key of the latency table (a hash of every layer's
family key), each layer's (in x out) channels and MACs before and after a seeded random pruning, and
(flops, params) predicted and measured. Old latency tables stay valid only while these stay equal.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.models.io import load_model, to_graph_module
from edgeprune.network import GROUPED, LINEAR, Geometry
from edgeprune.profiling.signature import LayerExtractor
from edgeprune.pruning import cost, groups

HERE = Path(__file__).parent
RECORDED = json.loads((HERE / "network_counts_15efe40.json").read_text())
# Structure keys changed on purpose since: a channel multiplier's layers are keyed by their multiplier, not by a
# group count that pruning changes (the old key's entries could not be built below the full width, nor read by a
# pruned network), so a network with one has a new key; its counts are those recorded.
RESTRUCTURED = {"CellNet": "326bb41d150ce9bd"}
CASES = {
    "lenet5": ("lenet5", (1, 16, 16), 0.5),
    "resnet20": ("resnet20", (1, 8, 8), 0.25),
    "resnet56": ("resnet56", (1, 8, 8), 0.25),
    "mobilenetv2": ("mobilenetv2", (3, 8, 8), 0.25),
    "vgg11": ("vgg11", (1, 16, 16), 0.25),
    **{
        name: (f"{HERE / 'family_models.py'}:{name}", (3, 16, 16), None)
        for name in ("SplitShuffleNet", "GroupedNet", "DualPathNet", "CellNet")
    },
}

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module


class _Small(nn.Module):
    """conv 3->8 k3 p1 on 8x8, depthwise k3 s2, grouped 1x1 8->16 in 2 groups, BN, linear from 16x4x4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.grouped = nn.Conv2d(8, 16, 1, groups=2, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.grouped(self.dw(torch.relu(self.conv(x))))))
        return self.fc(torch.flatten(y, 1))


# By hand: MACs = output pixels x outputs x weights per output; params = weights (+ bias, + BN's 2 per channel)
HAND_MACS = {"conv": 8 * 8 * 8 * (3 * 9), "dw": 4 * 4 * 8 * 9, "grouped": 4 * 4 * 16 * (8 // 2), "fc": 256 * 5}
HAND_PARAMS = (8 * 27 + 8) + 8 * 9 + 16 * 4 + 2 * 16 + (256 * 5 + 5)


def test_counter_matches_a_hand_count() -> None:
    module = to_graph_module(_Small())
    layers = {layer.name: layer for layer in LayerExtractor().layers(module, (3, 8, 8))}
    assert {name: layer.macs for name, layer in layers.items()} == HAND_MACS
    assert (layers["fc"].in_channels, layers["fc"].family.kind, layers["fc"].family.in_width(16)) == (16, LINEAR, 256)
    assert layers["grouped"].family.kind == GROUPED and layers["grouped"].family.groups == 2
    total = (sum(HAND_MACS.values()), HAND_PARAMS)
    assert cost.measure(module, (3, 8, 8)) == total
    structure = groups.analyze(module, (3, 8, 8))
    assert cost.predict(structure, structure.sizes()) == total


def test_geometry_counts_grouped_and_channel_multiplier_convs() -> None:
    grouped = Geometry(GROUPED, (3, 3), (1, 1), (1, 1), (1, 1), 4, 4, groups=4)
    assert grouped.output_size == (4, 4)
    assert grouped.macs(8, 12) == 16 * 12 * 9 * 2  # 2 inputs per group
    assert grouped.params(8, 12, bias=True) == 12 * 9 * 2 + 12
    # a channel multiplier (one input per group) keeps one input per group when pruning shrinks its groups
    multiplier = groups.GroupedLayer(
        "m", Geometry(GROUPED, (3, 3), (1, 1), (1, 1), (1, 1), 4, 4, groups=4), 4, 8, False, (), ()
    )
    assert multiplier.channelwise and multiplier.cost(2, 4) == (16 * 4 * 9, 4 * 9)


def _load(name: str):  # noqa: ANN202 - a ModelBundle
    arch, shape, width = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what each family leaves out is checked in test_pruning_families
        return load_model(arch, shape, 10, **({"width": width} if width else {}))


@pytest.mark.parametrize("name", CASES)
def test_counts_and_signatures_are_those_of_the_old_counters(name: str) -> None:
    bundle = _load(name)
    shape = bundle.input_shape
    recorded = RECORDED[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = groups.analyze(bundle.module, shape)
    layers, key = LayerExtractor().extract(bundle.module, shape)
    assert key == RESTRUCTURED.get(name, recorded["structure"])
    assert [[f"{x.in_channels}x{x.out_channels}", x.macs] for x in layers] == recorded["layers"]
    rng = random.Random(1)
    keep = {n: sorted(rng.sample(range(g.size), rng.randint(1, g.size))) for n, g in structure.groups.items()}
    pruned = groups.prune(bundle.module, structure, keep)
    pruned_layers = LayerExtractor().layers(pruned, shape)
    assert [[f"{x.in_channels}x{x.out_channels}", x.macs] for x in pruned_layers] == recorded["pruned_layers"]
    assert list(cost.predict(structure, structure.sizes())) == recorded["predict_full"]
    assert list(cost.measure(bundle.module, shape)) == recorded["measure_full"]
    assert list(cost.predict(structure, {n: len(k) for n, k in keep.items()})) == recorded["predict_kept"]
    assert list(cost.measure(pruned, shape)) == recorded["measure_pruned"]


def test_string_padding_is_the_explicit_padding_it_stands_for() -> None:
    same = nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"), nn.Conv2d(4, 4, 3, padding="valid"))
    explicit = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=0))
    keys = [[x.key for x in LayerExtractor().layers(to_graph_module(m), (3, 8, 8))] for m in (same, explicit)]
    assert keys[0] == keys[1]
    assert cost.measure(same, (3, 8, 8))[0] == cost.measure(explicit, (3, 8, 8))[0] == 8 * 8 * 4 * 27 + 6 * 6 * 4 * 36
    with pytest.raises(EdgepruneError, match="pads one side more"):
        cost.measure(nn.Sequential(nn.Conv2d(3, 4, 2, padding="same")), (3, 8, 8))
