"""Importance criteria: one finite score per channel of every group; a channel that carries nothing scores
zero under every criterion; scoring never changes the model."""

from __future__ import annotations

import pytest
import torch

from edgeprune.data import load_dataset
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import load_model
from edgeprune.pruning import criteria, groups
from edgeprune.pruning.search import ChannelMasks

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module


@pytest.mark.parametrize(("arch", "pick"), [("resnet20", "layers.3.conv1"), ("mobilenetv2", "features.10.block.0")])
def test_every_criterion_scores_every_channel(arch: str, pick: str) -> None:
    data = load_dataset("digits", (1, 8, 8), seed=0)
    module = load_model(arch, (1, 8, 8), 10, width=0.25).module.eval()
    structure = groups.analyze(module, (1, 8, 8))
    silent = [0, 3]
    keep = {name: list(range(group.size)) for name, group in structure.groups.items()}
    keep[pick] = [c for c in keep[pick] if c not in silent]
    ChannelMasks(module, structure).set(keep, structure.sizes())
    state = {k: v.clone() for k, v in module.state_dict().items()}
    for criterion in criteria.CRITERIA:
        scores = criteria.score(criterion, module, structure, data, torch.Generator().manual_seed(0), batches=2)
        assert set(scores) == set(structure.groups), criterion
        for name, values in scores.items():
            assert values.shape == (structure.groups[name].size,) and torch.isfinite(values).all(), criterion
        assert scores[pick][silent].abs().max() == 0, criterion
        assert scores[pick].max() > 0, criterion
    assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())
    assert all(p.grad is None for p in module.parameters())


def test_criteria_needing_data_or_batchnorm_say_so() -> None:
    module = load_model("lenet5", (1, 16, 16), 10, width=0.5).module
    structure = groups.analyze(module, (1, 16, 16))
    with pytest.raises(EdgepruneError, match="'bn' needs a BatchNorm"):
        criteria.score("bn", module, structure)
    with pytest.raises(EdgepruneError, match="needs data"):
        criteria.score("taylor", module, structure)
    with pytest.raises(EdgepruneError, match="unknown criterion"):
        criteria.score("random", module, structure)
