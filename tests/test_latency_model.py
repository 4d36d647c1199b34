"""The latency model bound to one network (`LatencyModel.network`) predicts from layer widths exactly what it
predicts for the resized module the pruner used to build per query (fast tier: a table written here, no device)."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest

from edgeprune.models.io import load_model
from edgeprune.network import GROUPED
from edgeprune.profiling.grid import plan
from edgeprune.profiling.latency import LatencyModel, MissingEntries
from edgeprune.profiling.lut import LatencyTable
from edgeprune.profiling.signature import LayerExtractor
from edgeprune.profiling.single_layer import SingleLayer
from edgeprune.pruning import groups
from edgeprune.pruning.groups import layer_widths, skeleton
from tests.fake_device import FakeDevice


def fake(tmp_path: Path) -> FakeDevice:
    return FakeDevice(
        name="fake", description="", target={"kind": "llvm"}, tracker_host="127.0.0.1", tracker_port=9190,
        key="fake", profiles_root=tmp_path,
    )  # fmt: skip


def table_for(device: FakeDevice, module, input_shape) -> LatencyTable:  # noqa: ANN001
    """Entries on a step-4 grid at 1 ns per MAC plus 1 us, and the unpruned network measured 1.25x their sum."""
    layers, structure = LayerExtractor().extract(module, input_shape)
    table = LatencyTable.new(device)
    for key, entry in plan(layers, 4, 4).items():
        macs = entry.family.macs(entry.family.in_width(entry.in_channels), entry.out_channels)
        table.entries[key] = {"median_ms": 1e-3 + 1e-6 * macs}
    total = sum(1e-3 + 1e-6 * x.macs for x in layers)
    table.networks[structure] = {
        "channels": {x.name: [x.in_channels, x.out_channels] for x in layers},
        "measured_ms": 1.25 * total,
    }
    return table


CELLS = f"{Path(__file__).parent / 'family_models.py'}:CellNet"  # separable convs, channel multipliers among them
MODELS = {"resnet20": ("resnet20", (1, 16, 16), 0.5), "mobilenetv2": ("mobilenetv2", (3, 16, 16), 0.5)}
MODELS["cells"] = (CELLS, (3, 16, 16), None)


@pytest.mark.parametrize("case", MODELS)
def test_widths_predict_what_the_resized_module_does(case: str, tmp_path: Path) -> None:
    name, shape, width = MODELS[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what a family leaves out of pruning is checked in test_pruning_families
        module = load_model(name, shape, 10, **({"width": width} if width else {})).module
    structure = groups.analyze(module, shape)
    model = LatencyModel(table_for(fake(tmp_path), module, shape))
    network = model.network(module, shape)
    rng = random.Random(0)
    for _ in range(5):
        counts = {g: rng.choice(range(4, group.size + 1, 4) or [group.size]) for g, group in structure.groups.items()}
        from_widths = network.predict_ms(layer_widths(structure, counts))
        from_module = model.predict_ms(skeleton(module, structure, counts), shape)
        assert from_widths == pytest.approx(from_module, rel=1e-9)
    assert network.predict_ms({}) == pytest.approx(model.predict_ms(module, shape))


def test_widths_off_the_table_are_missing_entries(tmp_path: Path) -> None:
    module = load_model("resnet20", (1, 16, 16), 10, width=0.5).module
    table = table_for(fake(tmp_path), module, (1, 16, 16))
    table.entries = {k: v for k, v in table.entries.items() if "|8x" not in k}  # no layer may read 8 channels
    network = LatencyModel(table).network(module, (1, 16, 16))
    first = next(x for x in network.layers if not x.slot.in_fixed)
    with pytest.raises(MissingEntries):
        network.predict_ms({first.name: (8, first.out_channels)})


def test_a_channel_multipliers_entries_build_and_a_pruned_one_reads_them() -> None:
    """A conv with one input channel per group and more outputs than inputs loses whole groups when pruned, so
    its groups follow its inputs: every planned entry is a conv that builds (groups = its inputs, `multiplier`
    outputs each), and a pruned network keys the layer, and the whole network, as the unpruned one does."""
    shape = (3, 16, 16)
    module = load_model(CELLS, shape, 10).module
    layers, structure = LayerExtractor().extract(module, shape)
    widening = {x.name: x for x in layers if x.family.multiplier > 1}
    assert widening and all(x.family.kind == GROUPED and x.family.outputs_per_input == 2 for x in widening.values())
    entries = [e for e in plan(layers, 4, 4).values() if e.family.multiplier > 1]
    assert {e.in_channels for e in entries} >= {4, 8, 24}
    for entry in entries:
        conv = SingleLayer(entry.family, entry.in_channels, entry.out_channels).layer
        assert conv.groups == entry.in_channels and conv.out_channels == 2 * entry.in_channels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysed = groups.analyze(module, shape)
    counts = {name: max(4, group.size // 2 // 4 * 4) for name, group in analysed.groups.items()}
    pruned_layers, pruned_structure = LayerExtractor().extract(skeleton(module, analysed, counts), shape)
    assert pruned_structure == structure
    pruned = {x.name: x for x in pruned_layers if x.name in widening}
    assert all(pruned[n].family.key == widening[n].family.key for n in widening)
    assert all(pruned[n].in_channels < widening[n].in_channels for n in widening)
