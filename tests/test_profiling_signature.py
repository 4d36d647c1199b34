"""Layer extraction and signatures: what fixes a layer's kernel, found from the fx graph (no device needed)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgeprune.errors import EdgepruneError
from edgeprune.models.io import load_model, to_graph_module
from edgeprune.network import DEPTHWISE, LINEAR
from edgeprune.profiling.grid import default_step, grid_values, plan
from edgeprune.profiling.signature import LayerExtractor
from edgeprune.tvmx.transplant import adapt_tiles


def _by_name(module: nn.Module, shape: tuple[int, int, int]) -> dict:
    return {layer.name: layer for layer in LayerExtractor().layers(module, shape)}


def test_resnet_epilogues_follow_tvm_fusion() -> None:
    bundle = load_model("resnet20", (3, 16, 16), 10, width=0.25)
    layers = _by_name(bundle.module, bundle.input_shape)
    assert len(layers) == 22
    assert layers["stem.0"].family.epilogue == ("bias", "relu")  # BN folds into a bias
    assert layers["layers.0.conv2"].family.epilogue == ("bias", "add", "relu")  # residual fused
    assert layers["layers.3.shortcut.0"].family.epilogue == ("bias",)  # its add went to conv2
    assert layers["layers.3.conv1"].family.stride == (2, 2)
    assert layers["layers.6.conv2"].family.height == 4
    assert layers["fc"].family.kind == LINEAR
    assert layers["stem.0"].slot.in_fixed and not layers["stem.0"].slot.out_fixed
    assert layers["fc"].slot.out_fixed and not layers["fc"].slot.in_fixed


def test_mobilenet_depthwise_relu6_and_left_residual() -> None:
    bundle = load_model("mobilenetv2", (3, 16, 16), 10, width=0.25)
    layers = _by_name(bundle.module, bundle.input_shape)
    assert layers["features.4.block.3"].family.kind == DEPTHWISE
    assert layers["features.4.block.3"].family.epilogue == ("bias", "relu6")
    # `x + out`: the residual is the left operand, a different TIR function than `out + x`
    assert layers["features.5.block.6"].family.epilogue == ("bias", "radd")


class _Odd(nn.Module):
    """Shortcut first in the add, a conv without bias or BN, and a conv whose output is used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.short = nn.Conv2d(8, 8, 1, bias=False)
        self.twice = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        y = torch.relu(self.short(h) + self.b(h))
        t = self.twice(y)
        z = torch.relu(t) * t
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(z, 4), 1))


def test_fusion_rules_on_an_unusual_graph() -> None:
    layers = _by_name(to_graph_module(_Odd()), (3, 8, 8))
    assert layers["a"].family.epilogue == ()
    assert layers["short"].family.epilogue == ("add", "relu")  # left operand of the add takes it
    assert layers["b"].family.epilogue == ("bias",)
    assert layers["twice"].family.epilogue == ("bias",)  # two users: nothing fuses after it
    fc = layers["fc"]
    assert (fc.in_channels, fc.family.height, fc.family.width) == (8, 4, 4)  # flattened from an 8x4x4 map


def test_extraction_is_cached_and_reads_pruned_channels() -> None:
    bundle = load_model("resnet20", (3, 16, 16), 10, width=0.25)
    extractor = LayerExtractor()
    first = extractor.slots(bundle.module, bundle.input_shape)
    narrower = bundle.module
    block = narrower.get_submodule("layers.0")
    block.conv1, block.bn1 = nn.Conv2d(4, 2, 3, 1, 1, bias=False), nn.BatchNorm2d(2)
    block.conv2 = nn.Conv2d(2, 4, 3, 1, 1, bias=False)
    assert extractor.slots(narrower, bundle.input_shape) is first  # same graph: no new analysis
    layers = {layer.name: layer for layer in extractor.layers(narrower, bundle.input_shape)}
    assert (layers["layers.0.conv1"].out_channels, layers["layers.0.conv2"].in_channels) == (2, 2)


def test_structure_key_is_stable_across_extractors() -> None:
    bundle = load_model("resnet20", (3, 16, 16), 10, width=0.25)
    key = LayerExtractor().slots(bundle.module, bundle.input_shape)[1]
    again = load_model("resnet20", (3, 16, 16), 10, width=0.25)
    assert LayerExtractor().slots(again.module, again.input_shape)[1] == key
    other = load_model("resnet20", (3, 32, 32), 10, width=0.25)
    assert LayerExtractor().slots(other.module, other.input_shape)[1] != key


def test_bad_input_shape_is_a_clear_error() -> None:
    bundle = load_model("lenet5", (1, 16, 16), 10)
    with pytest.raises(EdgepruneError, match="does not accept input"):
        LayerExtractor().layers(bundle.module, (3, 16, 16))


def test_grid_steps_follow_vector_width() -> None:
    assert default_step(32, 8) == 8 and grid_values(32, 8) == [8, 16, 24, 32]
    assert default_step(128, 8) == 32  # wide layers: at most 4 points per dimension
    assert default_step(16, 16) == 8  # narrower than two vectors: half a vector, so it can be pruned
    assert grid_values(20, 8) == [8, 16, 20]  # the unpruned width is always a grid point


def test_plan_keeps_fixed_dimensions_and_dedupes_families() -> None:
    bundle = load_model("resnet20", (3, 8, 8), 10, width=0.5)
    layers = LayerExtractor().layers(bundle.module, bundle.input_shape)
    planned = plan(layers, lanes=8, step=8)
    stem = [e for e in planned.values() if e.family == layers[0].family and e.in_channels == 3]
    assert sorted(e.out_channels for e in stem) == [8]
    fc = [e for e in planned.values() if e.family.kind == LINEAR]
    assert {e.out_channels for e in fc} == {10} and sorted(e.in_channels for e in fc) == [8, 16, 24, 32]
    assert len(planned) == len({e.key for e in planned.values()})


@settings(deadline=None)  # a property of arithmetic: an example slowed by a loaded machine is no failure
@given(st.integers(1, 512), st.lists(st.sampled_from([1, 2, 3, 4, 8, 16]), min_size=2, max_size=4))
def test_adapted_tiles_are_perfect(extent: int, factors: list[int]) -> None:
    new = adapt_tiles(extent, factors)
    product = 1
    for f in new:
        product *= f
    assert product == extent and len(new) == len(factors)
    assert all(f % n == 0 for f, n in zip(factors[1:], new[1:], strict=True))  # inner tiles only shrink


@pytest.mark.parametrize(
    ("name", "factory", "unmatched"),
    [
        ("resnet20", lambda: load_model("resnet20", (3, 8, 8), 10, width=0.25).module, set()),
        ("mobilenetv2", lambda: load_model("mobilenetv2", (3, 8, 8), 10, width=0.25).module, set()),
        # known gap: TVM also fuses `relu(t) * t` (a diamond after the conv); the signature stops at t's two users
        ("odd", lambda: to_graph_module(_Odd()), {"twice"}),
    ],
)
def test_single_layer_networks_compile_to_the_networks_kernels(name: str, factory: Any, unmatched: set) -> None:
    """Every signature's own network holds exactly one of the whole network's tuning workloads: what the
    table measures, and the database records it writes, are the kernels the compiled network runs."""
    shape = (3, 8, 8)
    from tvm.s_tir import meta_schedule as ms

    from edgeprune.devices.profile import local_device
    from edgeprune.profiling import single_layer
    from edgeprune.tvmx import tune
    from edgeprune.tvmx.export import to_relax

    device = local_device()
    module = factory()
    network_tasks = tune.extract_tasks(to_relax(module, (1, *shape)).mod, device)
    database = ms.database.MemoryDatabase()
    for task in network_tasks:
        database.commit_workload(task.dispatched[0])
    layers: dict = {}
    for layer in LayerExtractor().layers(module, shape):
        layers.setdefault(layer.key, layer)  # `twice` shares `b`'s signature: only `b`'s kernel is reproduced
    assert len(layers) + len(unmatched) == len(network_tasks)
    for layer in layers.values():
        _, relax_model = single_layer.to_relax(layer.family, layer.in_channels, layer.out_channels)
        tasks = tune.extract_tasks(relax_model.mod, device)
        assert len(tasks) == 1, layer.key
        assert database.has_workload(tasks[0].dispatched[0]), f"{name}: {layer.name} ({layer.key})"
