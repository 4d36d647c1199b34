"""LeGR's (alpha, kappa) search: beats the identity where layer compensation matters, is reproducible by
seed, and a checkpointed search continued piece by piece ends exactly where an uninterrupted one does. Its
candidate score (a cut network, BatchNorm re-estimated, validation loss) is checked against the masked network
it stands for."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeprune.data import Dataset
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import load_model
from edgeprune.pruning import criteria, groups, ranking
from edgeprune.pruning.budget import Budget, bind
from edgeprune.pruning.finetune import TrainSettings, initialize, loss_on, recalibrate_batchnorm, train
from edgeprune.pruning.fitness import adaptive_bn_scorer, probe_layer, training_rows
from edgeprune.pruning.search import (
    ChannelMasks,
    SearchSettings,
    learned_mismatch,
    load_learned,
    save_learned,
    search,
    search_fingerprint,
)
from edgeprune.targets import parse_target

TINY = SearchSettings(population=8, sample_size=3, generations=8, calibration=2, val_samples=256)
PLAIN = SearchSettings(batch_size=32, calibration=3, val_samples=128)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module


@pytest.fixture(scope="module")
def case(digits: Dataset) -> tuple[nn.Module, groups.Structure, dict, Budget, dict]:
    """A trained ResNet-20 (width 0.5) whose stage-3 conv1 filters are scaled by 1/4, with its BatchNorm
    statistics scaled to match: the same function, but plain global ranking of filter norms now starves that
    layer. This is the scale mismatch between layers that LeGR's per-layer affine transform compensates."""
    module = load_model("resnet20", (1, 8, 8), 10, width=0.5).module
    initialize(module, 0)
    train(module, digits, TrainSettings(epochs=4), torch.Generator().manual_seed(0))
    structure = groups.analyze(module, (1, 8, 8))
    inputs = digits.prepare(digits.val.images[:64])
    with torch.no_grad():
        reference = module.eval()(inputs)
        scale = 0.25
        for name in structure.groups["layers.6.conv1"].layers:
            module.get_submodule(name).weight.mul_(scale)
        for name in structure.groups["layers.6.conv1"].norms:
            norm = module.get_submodule(name)
            norm.running_mean.mul_(scale)
            norm.running_var.mul_(scale * scale)
            norm.eps *= scale * scale
        torch.testing.assert_close(module(inputs), reference)
    scores = criteria.score("l2", module, structure)
    budget = bind(parse_target("flops", "50%"), module, structure)
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.1)
    return module, structure, scores, budget, floor


def _search(case, digits, seed=0, settings=TINY, checkpoint=None):
    module, structure, scores, budget, floor = case
    return search(module, structure, scores, budget, floor, digits, settings, seed, "l2", checkpoint)


def test_evolution_beats_the_identity(case, digits) -> None:
    module, structure, scores, budget, floor = case
    before = copy.deepcopy(module.state_dict())
    result = _search(case, digits)
    assert result.evaluations == TINY.population + TINY.generations and result.finished
    assert result.history[0] == result.identity_fitness
    assert result.fitness < result.identity_fitness
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items()), "the search restores nothing"
    identity = ranking.rank(scores, budget, floor).counts()
    learned = ranking.rank(scores, budget, floor, result.alpha, result.kappa)
    assert learned.cost <= budget.target and learned.counts() != identity


def test_same_seed_same_search(case, digits) -> None:
    first, second, other = _search(case, digits, 5), _search(case, digits, 5), _search(case, digits, 6)
    assert first.history == second.history and first.alpha == second.alpha and first.kappa == second.kappa
    assert other.alpha != first.alpha


def test_an_interrupted_search_continues_to_the_same_result(case, digits, tmp_path: Path) -> None:
    checkpoint = tmp_path / "search.json"
    whole = _search(case, digits, 2)
    # a time box so short that every call evaluates one candidate, then stops and leaves the checkpoint
    boxed = SearchSettings(**{**TINY.__dict__, "minutes": 1e-9})
    calls, result = 0, None
    while result is None or not result.finished:
        result = _search(case, digits, 2, boxed, checkpoint)
        calls += 1
        assert json.loads(checkpoint.read_text())["evolution"]["history"][-1]["born"] == result.evaluations - 1
    assert calls == whole.evaluations
    assert result.history == whole.history and result.alpha == whole.alpha


def test_finalists_choose_the_answer_after_a_short_fine_tune(case, digits, tmp_path: Path) -> None:
    """The finalists are the two seeds and the best distinct candidates; the evolution is the one a plain search
    makes, only the answer changes; their losses come from training and are kept by the checkpoint."""
    plain = _search(case, digits, 3)
    judged_settings = SearchSettings(**{**TINY.__dict__, "finalists": 2, "finalist_steps": 5, "finalist_samples": 128})
    checkpoint = tmp_path / "search.json"
    judged = _search(case, digits, 3, judged_settings, checkpoint)
    assert judged.history == plain.history and not plain.finalists
    finals = judged.finalists
    assert [f.born for f in finals[:2]] == [0, 1] and len(finals) == 4  # the seeds, then the 2 best
    # equal scores are equal channels (each distinct plan is scored once), so the seeds' scores stand for theirs
    others = sorted(set(plain.history) - set(plain.history[:2]))
    assert [f.fitness for f in finals[2:]] == others[:2]
    assert judged.fitness == min(finals, key=lambda f: f.loss).fitness
    untrained = _search(case, digits, 3, SearchSettings(**{**judged_settings.__dict__, "finalist_steps": 0}))
    assert [f.loss for f in untrained.finalists] != [f.loss for f in finals]  # the steps train the finalists
    assert len(json.loads(checkpoint.read_text())["finals"]) == 4
    again = _search(case, digits, 3, judged_settings, checkpoint)  # finished: the checkpoint holds the losses
    assert again.finalists == finals and again.alpha == judged.alpha
    # time-boxed to one candidate a call, with finalists judged at the end of each, it ends where the whole did
    boxed, pieces, result = (
        SearchSettings(**{**judged_settings.__dict__, "minutes": 1e-9}),
        tmp_path / "boxed.json",
        None,
    )
    while result is None or not result.finished:
        result = _search(case, digits, 3, boxed, pieces)
    assert result.finalists == finals and result.alpha == judged.alpha


def test_finalists_neither_restart_the_evolution_nor_count_a_repeated_seed_twice(case, digits) -> None:
    module, structure, scores, budget, floor = case
    with_finalists = SearchSettings(**{**TINY.__dict__, "finalists": 3, "finalist_steps": 2})
    assert search_fingerprint(structure, budget, "l2", "none", with_finalists, 0) == search_fingerprint(
        structure, budget, "l2", "none", TINY, 0
    )  # a checkpointed search continues when only its finalists change
    normalised = ranking.normalize(scores, "mean")  # the two seeds keep the same channels: one finalist
    result = search(module, structure, normalised, budget, floor, digits, with_finalists, 0, normalize="mean")
    assert len(result.finalists) == 1 + 3 and result.finalists[0].born == 0
    assert 1 not in [f.born for f in result.finalists]


def test_learned_file_is_reused_only_for_its_model(case, digits, tmp_path: Path) -> None:
    module, structure, scores, budget, floor = case
    result = _search(case, digits, 0, SearchSettings(population=4, sample_size=2, generations=2, steps=2))
    path = tmp_path / "pruned.legr.json"
    save_learned(path, result, structure, "l2", "none", budget)
    assert load_learned(path, structure, "l2") == (result.alpha, result.kappa)
    other = groups.analyze(load_model("resnet20", (1, 8, 8), 10, width=0.25).module, (1, 8, 8))
    assert "different model" in (learned_mismatch(path, other, "l2") or "")
    with pytest.raises(EdgepruneError, match="criterion 'l2', not 'taylor'"):
        load_learned(path, structure, "taylor")
    with pytest.raises(EdgepruneError, match="normalised 'none', not 'mean'"):
        load_learned(path, structure, "l2", "mean")  # alpha and kappa were learned on another scale


def test_the_population_starts_with_the_identity_and_the_normalised_ranking(case, digits) -> None:
    module, structure, scores, budget, floor = case
    result = search(module, structure, scores, budget, floor, digits, TINY, 0, "l2")
    alpha = {name: 1.0 / float(values.double().mean()) for name, values in scores.items()}
    normalised = ranking.rank(ranking.normalize(scores, "mean"), budget, floor).counts()
    assert ranking.rank(scores, budget, floor, alpha).counts() == normalised
    # the scaled layer is starved by raw norms and not by normalised ones: the second member scores better
    assert normalised["layers.6.conv1"] > ranking.rank(scores, budget, floor).counts()["layers.6.conv1"]
    assert result.history[1] < result.history[0] == result.identity_fitness


def test_a_cut_candidate_scores_like_the_masked_network(case, digits) -> None:
    """The score of a cut network equals that of the full network with the channels held at zero (the
    function the candidate stands for), after the same BatchNorm re-estimation; stale statistics differ."""
    module, structure, scores, budget, floor = case
    before = copy.deepcopy(module.state_dict())
    keep = ranking.rank(scores, budget, floor).keep
    rows = torch.randint(0, len(digits.train), (3, 32), generator=torch.Generator().manual_seed(1)).numpy()
    cheap = adaptive_bn_scorer(module, structure, digits, PLAIN, rows)(keep)
    masked = copy.deepcopy(module)
    ChannelMasks(masked, structure).set(keep, structure.sizes())
    batches = [(digits.prepare(digits.train.images[torch.from_numpy(r)]), digits.train.labels[r]) for r in rows]
    val = digits.prepare(digits.val.images[:128]), digits.val.labels[:128]
    stale = loss_on(masked, *val)
    recalibrate_batchnorm(masked, batches)
    assert cheap == pytest.approx(loss_on(masked, *val), rel=1e-4)
    assert abs(cheap - stale) > 1e-3
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_the_probe_judges_what_the_features_hold_not_the_old_classifier(case, digits) -> None:
    """With the classifier's rows swapped (every class read off another class's weights), the features are as
    good as before: the plain loss says the network is ruined, the probe's refit classifier says it is not."""
    module, structure, scores, budget, floor = case
    keep = {name: list(range(size)) for name, size in structure.sizes().items()}  # all of it: features intact
    layer = probe_layer(module, structure)
    assert layer is not None
    probing = SearchSettings(**{**PLAIN.__dict__, "fitness": "probe", "probe_samples": 192})
    shape = (training_rows(probing, True), 32)
    rows = torch.randint(0, len(digits.train), shape, generator=torch.Generator().manual_seed(1)).numpy()
    swapped = copy.deepcopy(module)
    with torch.no_grad():
        swapped.get_submodule(layer).weight.copy_(swapped.get_submodule(layer).weight.roll(1, dims=0))
        swapped.get_submodule(layer).bias.copy_(swapped.get_submodule(layer).bias.roll(1, dims=0))
    plain = {m: adaptive_bn_scorer(m, structure, digits, PLAIN, rows[:3])(keep) for m in (module, swapped)}
    probed = {m: adaptive_bn_scorer(m, structure, digits, probing, rows, layer)(keep) for m in (module, swapped)}
    assert plain[swapped] > 2 * plain[module]
    assert probed[swapped] < plain[swapped] / 2
    assert probed[swapped] == pytest.approx(probed[module], abs=0.1)


def test_a_head_the_probe_cannot_refit_falls_back_to_plain_loss(digits) -> None:
    """A convolutional head (no linear classifier fed a vector): the search scores by plain loss and says so."""
    head = torch.fx.symbolic_trace(
        nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 10, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
    )
    structure = groups.analyze(head, (1, 8, 8))
    assert probe_layer(head, structure) is None
    scores = criteria.score("l2", head, structure)
    budget = bind(parse_target("flops", "50%"), head, structure)
    floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.1)
    tiny = SearchSettings(population=2, sample_size=1, generations=1, calibration=1, val_samples=64, fitness="probe")
    assert search(head, structure, scores, budget, floor, digits, tiny, 0).scored_by == "adaptive-bn"


def test_the_case_model_is_probed_when_asked(case, digits) -> None:
    asked = SearchSettings(population=2, sample_size=1, generations=0, fitness="probe")
    assert _search(case, digits, 0, asked).scored_by == "probe"
    assert (
        _search(case, digits, 0, SearchSettings(population=2, sample_size=1, generations=0)).scored_by == "adaptive-bn"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"population": 1}, "--population"),
        ({"sample_size": 9}, "--sample-size"),
        ({"minutes": 0}, "minutes"),
        ({"calibration": -1}, "calibration"),
        ({"fitness": "accuracy"}, "unknown search fitness"),
        ({"finalists": -1}, "finalists"),
    ],
)
def test_bad_search_settings(change: dict, message: str) -> None:
    with pytest.raises(EdgepruneError, match=message):
        SearchSettings(**{**TINY.__dict__, **change}).check()


def test_batchnorm_statistics_are_recomputed_from_the_batches() -> None:
    from edgeprune.pruning.finetune import recalibrate_batchnorm

    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(16, 3, 4, 4, generator=generator) * 2 + 5 for _ in range(3)]
    module = nn.Sequential(nn.BatchNorm2d(3)).eval()
    module[0].running_mean.fill_(-100.0)  # as stale as after removing the channels feeding it
    recalibrate_batchnorm(module, [(x, torch.zeros(16)) for x in inputs])
    everything = torch.cat(inputs).transpose(0, 1).flatten(1)
    torch.testing.assert_close(module[0].running_mean, everything.mean(1), rtol=0, atol=1e-4)
    torch.testing.assert_close(module[0].running_var, everything.var(1), rtol=1e-2, atol=0)
    assert module[0].momentum == 0.1 and not module.training  # the module is left as it was found


def test_filling_the_latency_table_does_not_use_up_the_time_box(case, digits) -> None:
    """Profiling missing table entries on the device (mobilenetv2: 7 minutes in the first ranking) is the
    table's work: the box counts only the search's own time, so the search goes on past it."""
    from dataclasses import fields

    class ProfilingBudget(Budget):
        def cost(self, counts: dict[str, int]) -> float:
            self.profiling_seconds += 3600.0  # as if each cost had measured the table's missing entries
            return super().cost(counts)

    module, structure, scores, budget, floor = case
    profiling = ProfilingBudget(**{f.name: getattr(budget, f.name) for f in fields(budget)})
    boxed = SearchSettings(**{**TINY.__dict__, "minutes": 1e-9})
    result = search(module, structure, scores, profiling, floor, digits, boxed, 0)
    assert result.finished and result.evaluations == TINY.population + TINY.generations
    assert search(module, structure, scores, budget, floor, digits, boxed, 0).evaluations == 1  # without it
