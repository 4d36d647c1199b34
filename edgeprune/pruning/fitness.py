"""How a LeGR search scores a candidate with edgeprune's own loop on a data set (lower is better). Each way is a
`Fitness`, a small class registered in `FITNESSES` by the name `--fitness` (SearchSettings.fitness) takes:

- "adaptive-bn": the cut network's validation loss after re-estimated BatchNorm statistics, after
  `settings.steps` Adam steps (0 by default): cheap, but misleading well below the unpruned cost
  (the search's docstring and bench/results/search-fitness.md);
- "probe": the loss of its classifier refit to the cut network's features;
- "tau-steps": the validation cross-entropy after `settings.tau` Adam steps on the cut network (LeGR's own
  fitness: the public code trains tau = 200 steps at aggressive budgets, NNCF's LeGR 20), then adaptive BN;
- "distill": the same tau steps, but trained and scored by the KL divergence of the cut network's outputs from
  the unpruned network's (on the same images): the candidate is judged by how well it can still imitate the
  network it came from, not only the labels, which separates candidates whose accuracy is alike.

Every kind trains and calibrates on the training rows the search drew with its seed (checkpointed), and any
dropout draws from a torch generator seeded by those rows, so one seed scores the same candidate the same, bit
for bit, on one machine and thread count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.data import Dataset
from edgeprune.pruning.finetune import divergence_on, loss_on, recalibrate_batchnorm, train_steps
from edgeprune.pruning.groups import Structure, classifier_layers, prune
from edgeprune.pruning.registry import Registry
from edgeprune.pruning.search_settings import SearchSettings

Scorer = Callable[[dict[str, list[int]]], float]  # kept units per group -> score (lower is better)


def training_rows(settings: SearchSettings, probes: bool) -> int:
    """Batches of training rows a search draws: its training steps, its calibration and (probe) the refit set."""
    probe = -(-settings.probe_samples // settings.batch_size) if probes else 0
    return settings.steps + settings.calibration + probe


def probe_layer(module: nn.Module, structure: Structure) -> str | None:
    """The classifier the probe refits: the model's one output layer, if it is a linear layer fed a batch of
    vectors; None otherwise (a convolutional head, several outputs), and the search scores by plain loss."""
    names = classifier_layers(module)
    if len(names) != 1 or not isinstance(module.get_submodule(names[0]), nn.Linear):
        return None
    was_training = module.training
    try:
        fed = _features(module, names[0], torch.zeros(1, *structure.input_shape))
    finally:
        module.train(was_training)
    return names[0] if fed.dim() == 2 else None


def _features(module: nn.Module, layer: str, inputs: torch.Tensor) -> torch.Tensor:
    """What `layer` is fed when `module` (in eval mode) sees `inputs`."""
    captured: list[torch.Tensor] = []
    hook = module.get_submodule(layer).register_forward_hook(lambda _m, i, _o: captured.append(i[0].detach()))
    try:
        with torch.no_grad():
            module.eval()(inputs)
    finally:
        hook.remove()
    return captured[0]


def refit_loss(
    layer: nn.Linear,
    fit: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    iterations: int = 20,
    pull: float = 1e-3,
) -> float:
    """Validation loss of `layer` refit on features `fit` (L-BFGS, from its own weights, with a pull of `pull`
    x the squared distance back to them, so a few hundred images cannot overfit a wide head); `layer` stays."""
    start_weight = layer.weight.detach()
    start_bias = layer.bias.detach() if layer.bias is not None else torch.zeros(layer.out_features)
    weight, bias = start_weight.clone().requires_grad_(), start_bias.clone().requires_grad_()
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=iterations, line_search_fn="strong_wolfe")
    features, labels = fit

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(F.linear(features, weight, bias), labels) + pull * (weight - start_weight).pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float(F.cross_entropy(F.linear(val[0], weight, bias), val[1]))


def adaptive_bn_scorer(
    module: nn.Module,
    structure: Structure,
    data: Dataset,
    settings: SearchSettings,
    train_index: np.ndarray,
    probe: str | None = None,
    distill: bool = False,
) -> Scorer:
    """Validation loss of the cut network after `settings.steps` Adam steps and re-estimated BatchNorm
    statistics; with `probe` (the classifier's name), the loss of that classifier refit to the cut network's
    features; with `distill`, steps and score by the KL divergence from `module`'s own outputs instead of the
    labels. `train_index` holds the training rows (`training_rows` batches): the first `steps` fine-tune,
    the next `calibration` re-estimate BatchNorm, the rest are the probe's refit set."""

    # Prepared once: the same batches and validation images for every candidate, so differences are the
    # candidate's, and no candidate pays for decoding, resizing or normalising images again. The forward-only
    # passes run channels-last: torch's CPU convolutions take about a fifth (resnet20) to a third (mobilenetv2)
    # less time on it. (Training stays contiguous: torch 2.13 aborted in a channels-last backward of a cut net.)
    fast = torch.channels_last

    def prepared(images: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
        return data.prepare(images).contiguous(memory_format=layout)

    batches = [
        (
            prepared(data.train.images[torch.from_numpy(row)], torch.contiguous_format if i < settings.steps else fast),
            data.train.labels[torch.from_numpy(row)],
        )
        for i, row in enumerate(train_index)
    ]
    calibrated = settings.steps + settings.calibration
    steps, calibration, refit = batches[: settings.steps], batches[settings.steps : calibrated], batches[calibrated:]
    val_count = min(settings.val_samples, len(data.val))
    val_inputs, val_labels = prepared(data.val.images[:val_count], fast), data.val.labels[:val_count]
    if probe is not None and refit:
        refit_inputs = torch.cat([x for x, _ in refit])[: settings.probe_samples]
        refit_labels = torch.cat([y for _, y in refit])[: settings.probe_samples]
    if distill:  # the unpruned network's outputs, once: what every candidate is trained and scored towards
        steps = [(inputs, _outputs(module, inputs)) for inputs, _ in steps]
        val_teacher = _outputs(module, val_inputs)
    dropout_seed = int(np.asarray(train_index, dtype=np.int64).sum()) % 2**31

    def score(keep: dict[str, list[int]]) -> float:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(dropout_seed)  # the same draws for every candidate and every run of this seed
            candidate = prune(module, structure, keep)  # a new module: the input stays untouched
            if steps:
                train_steps(candidate, steps, settings.lr, distill=distill)
            candidate.to(memory_format=fast)
            recalibrate_batchnorm(candidate, calibration)
        if distill:
            return divergence_on(candidate, val_inputs, val_teacher)
        if probe is None or not refit:
            return loss_on(candidate, val_inputs, val_labels)
        fit = _features(candidate, probe, refit_inputs), refit_labels
        return refit_loss(candidate.get_submodule(probe), fit, (_features(candidate, probe, val_inputs), val_labels))

    return score


def _outputs(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """`module`'s logits for `inputs`, in eval mode, without gradients; its mode is left as it was."""
    was_training = module.training
    try:
        with torch.no_grad():
            return module.eval()(inputs).detach()
    finally:
        module.train(was_training)


class Fitness:
    """One way to score a search candidate with edgeprune's own loop (see the module docstring)."""

    name: ClassVar[str]
    label: ClassVar[str]  # what the score is, for progress lines and summaries

    def settings(self, settings: SearchSettings) -> SearchSettings:
        """The search settings as this kind trains with them (the training steps it takes)."""
        return settings

    def probe(self, module: nn.Module, structure: Structure) -> str | None:
        """The classifier this kind refits, if any."""
        return None

    def rows(self, module: nn.Module, structure: Structure, settings: SearchSettings) -> int:
        """How many batches of training rows it draws."""
        return training_rows(self.settings(settings), self.probe(module, structure) is not None)

    def scorer(
        self, module: nn.Module, structure: Structure, data: Dataset, settings: SearchSettings, rows: np.ndarray
    ) -> tuple[Scorer, str]:
        """The score of a candidate's kept channels, and the name of the kind that actually scores."""
        probe = self.probe(module, structure)
        return adaptive_bn_scorer(module, structure, data, self.settings(settings), rows, probe), self.name


FITNESSES: Registry[Fitness] = Registry("search fitness")


@FITNESSES.register("adaptive-bn")
class AdaptiveBN(Fitness):
    """Validation loss after re-estimated BatchNorm statistics (and `steps` Adam steps, 0 by default)."""

    label = "val loss"


@FITNESSES.register("probe")
class Probe(Fitness):
    """The loss of the classifier refit to the cut features; a model without a single linear classifier fed a
    vector is scored as "adaptive-bn" (and says so: the result's `scored_by`)."""

    label = "probe val loss"

    def probe(self, module: nn.Module, structure: Structure) -> str | None:
        return probe_layer(module, structure)

    def scorer(
        self, module: nn.Module, structure: Structure, data: Dataset, settings: SearchSettings, rows: np.ndarray
    ) -> tuple[Scorer, str]:
        score, _ = super().scorer(module, structure, data, settings, rows)
        return score, self.name if self.probe(module, structure) is not None else AdaptiveBN.name


@FITNESSES.register("tau-steps")
class TauSteps(Fitness):
    """Validation cross-entropy after `tau` Adam steps on the cut network, then adaptive BN."""

    label = "val loss after tau steps"

    def settings(self, settings: SearchSettings) -> SearchSettings:
        return replace(settings, steps=settings.tau)


@FITNESSES.register("distill")
class Distill(TauSteps):
    """KL divergence from the unpruned network's outputs after `tau` steps that minimise it, then adaptive BN."""

    label = "KL from the unpruned net"

    def scorer(
        self, module: nn.Module, structure: Structure, data: Dataset, settings: SearchSettings, rows: np.ndarray
    ) -> tuple[Scorer, str]:
        return adaptive_bn_scorer(module, structure, data, self.settings(settings), rows, distill=True), self.name


def describe(scored_by: str) -> str:
    """What a search's `scored_by` means, for a person: a fitness's label, the user's own metric, or (a summary
    written before the fitness kinds) the name as it was."""
    if scored_by == "metric":
        return "minus your metric"
    return FITNESSES.get(scored_by).label if scored_by in FITNESSES else scored_by


def finalist_rows(settings: SearchSettings, seed: int, train_size: int) -> np.ndarray:
    """The finalists' training rows (their Adam steps, then their calibration batches), drawn from a generator
    of their own seeded by the search's seed: the evolution draws the same numbers with finalists as without,
    so the finalists change only which candidate is the answer."""
    rng = np.random.default_rng([seed, 1])
    return rng.integers(0, train_size, size=(settings.finalist_steps + settings.calibration, settings.batch_size))
