"""The pruning methods: how channels are chosen to meet a budget, then the surgery and the fine-tune.

legr     global ranking with meta-learned per-group (alpha, kappa) (Chin et al.; one search, many budgets)
global   global ranking of the raw scores (alpha = 1, kappa = 0)
uniform  the same share of channels removed from every group
iap      iterative activation-based pruning: several rounds of (score by mean activation, remove the same
         share per group, fine-tune), the budget approached geometrically (Zhao et al. 2022)
aiap     as iap with adaptive per-group thresholds: each group's activations are divided by their mean,
         recomputed every round, so a group is cut where its channels are weak relative to each other
pai      pruning at initialisation (after Reconvene): score the freshly initialised network (SNIP), remove
         the least sensitive channels by global ranking, then train the small network from scratch
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.progress import Progress
from torch import nn

from edgeprune.data import Dataset
from edgeprune.errors import EdgepruneError
from edgeprune.pruning import criteria, ranking
from edgeprune.pruning.budget import Budget, LatencyPredictor, bind, check_channel_step
from edgeprune.pruning.finetune import TrainSettings, UserLoop, initialize, train
from edgeprune.pruning.groups import Structure, analyze, prune
from edgeprune.pruning.search import SearchResult, SearchSettings, load_learned, save_learned, search
from edgeprune.targets import Target

METHODS = ("legr", "global", "uniform", "iap", "aiap", "pai")
DEFAULT_CRITERION = {
    "legr": "l2",
    "global": "l2",
    "uniform": "l2",
    "iap": "activation",
    "aiap": "activation",
    "pai": "snip",
}
# Per-group score normalisation by method (ranking.NORMALIZERS), from bench/results/pruning-before-fill.md: mean
# normalisation lifted `global` over raw scores in every seed (+0.33 points at 0.5x, +0.92 at 0.3x of resnet20's
# measured latency) and lowered `legr` (-0.96, -1.45: the search learns the layers' scales itself); uniform
# keeps a share per layer, so no scale reaches it, and iap, aiap and pai were not measured either way.
DEFAULT_NORMALIZE = {"legr": "none", "global": "mean", "uniform": "none", "iap": "none", "aiap": "none", "pai": "none"}


@dataclass(frozen=True)
class PruneSettings:
    method: str = "legr"
    criterion: str | None = None
    min_keep: float = 0.1
    finetune: TrainSettings = TrainSettings(epochs=5, lr=1e-3)
    search: SearchSettings = SearchSettings()
    rounds: int = 3
    round_epochs: int = 1
    calibration_batches: int = 4
    normalize: str | None = None  # per-group score normalisation before ranking (ranking.NORMALIZERS); None: per method
    channel_step: int | None = None  # kept counts are multiples of it; None: the latency table's grid (budget.bind)
    seed: int = 0
    reuse_search: Path | None = None  # learned (alpha, kappa) to use instead of searching
    search_file: Path | None = None  # where a new search writes its learned (alpha, kappa)
    search_checkpoint: Path | None = None
    train_checkpoint: Path | None = None

    @property
    def criterion_name(self) -> str:
        return self.criterion or DEFAULT_CRITERION[self.method]

    @property
    def normalizer(self) -> str:
        return self.normalize or DEFAULT_NORMALIZE[self.method]

    def check(self) -> None:
        if self.method not in METHODS:
            raise EdgepruneError(f"unknown method '{self.method}'", hint=f"choose one of {', '.join(METHODS)}")
        if self.criterion_name not in criteria.CRITERIA:
            raise EdgepruneError(
                f"unknown criterion '{self.criterion}'", hint=f"choose one of {', '.join(criteria.CRITERIA)}"
            )
        if self.normalize is not None:
            ranking.check_normalizer(self.normalize)
        check_channel_step(self.channel_step)
        if self.rounds < 1 or self.round_epochs < 0:
            raise EdgepruneError("--rounds must be >= 1 and epoch counts >= 0")
        self.finetune.check()
        if self.reuse_search is not None and self.method != "legr":
            raise EdgepruneError("--reuse-search applies to --method legr only")
        if self.method == "legr":
            self.search.check()


@dataclass
class Outcome:
    """The pruned module and how it was reached; `unchanged` when the model already met the budget."""

    module: nn.Module
    structure: Structure  # of the input model
    budget: Budget  # bound to the input model
    unchanged: bool = False
    search: SearchResult | None = None
    reused_search: Path | None = None
    notes: list[str] = field(default_factory=list)


class _Pruner:
    def __init__(
        self,
        module: nn.Module,
        data: Dataset | UserLoop,
        input_shape: tuple[int, int, int],
        target: Target,
        settings: PruneSettings,
        predictor: LatencyPredictor | None,
        progress: Progress | None,
    ) -> None:
        self.module, self.data, self.settings = module, data, settings
        self.predictor, self.progress = predictor, progress
        self.input_shape = input_shape
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.structure = _analyze(module, self.input_shape)
        self.budget = bind(target, module, self.structure, predictor, channel_step=settings.channel_step)
        self.floor = ranking.minimum_counts(self.structure.sizes(), self.budget.steps, settings.min_keep)

    def scores(self, module: nn.Module, structure: Structure) -> dict[str, torch.Tensor]:
        raw = criteria.score(
            self.settings.criterion_name,
            module,
            structure,
            None if isinstance(self.data, UserLoop) else self.data,
            self.generator,
            batches=self.settings.calibration_batches,
            batch_size=self.settings.finetune.batch_size,
        )
        return ranking.normalize(raw, self.settings.normalizer)

    def fine_tune(self, module: nn.Module, epochs: int, description: str, checkpoint: Path | None = None) -> None:
        if isinstance(self.data, UserLoop):
            if self.data.finetune is not None:
                self.data.finetune(module, epochs)
            return
        settings = TrainSettings(
            epochs, self.settings.finetune.batch_size, self.settings.finetune.lr, self.settings.finetune.weight_decay
        )
        shapes = sorted((k, tuple(v.shape)) for k, v in module.state_dict().items())
        fingerprint = f"{self.settings.method}:{self.settings.seed}:{shapes}"
        train(module, self.data, settings, self.generator, self.progress, checkpoint, fingerprint, description)

    def run(self) -> Outcome:
        if not ranking.check_reachable(self.budget, self.settings.min_keep):
            note = f"the model already meets {self.budget.describe()} ({self.budget.describe(self.budget.full())})"
            return Outcome(copy.deepcopy(self.module), self.structure, self.budget, unchanged=True, notes=[note])
        method = self.settings.method
        if method in ("iap", "aiap"):
            return self.iterative()
        module = self.module
        if method == "pai":
            module = copy.deepcopy(self.module)
            initialize(module, self.settings.seed)
        scores = self.scores(module, self.structure)
        outcome = Outcome(module, self.structure, self.budget)
        if method == "uniform":
            plan = ranking.uniform(scores, self.budget, self.floor)
        elif method == "legr":
            alpha, kappa = self.learned(scores, outcome)
            plan = ranking.rank(scores, self.budget, self.floor, alpha, kappa)
        else:
            plan = ranking.rank(scores, self.budget, self.floor)
        outcome.module = prune(module, self.structure, plan.keep)
        description = "training from scratch" if method == "pai" else "fine-tuning"
        self.fine_tune(outcome.module, self.settings.finetune.epochs, description, self.settings.train_checkpoint)
        return outcome

    def learned(self, scores: dict[str, torch.Tensor], outcome: Outcome) -> tuple[dict, dict]:
        criterion = self.settings.criterion_name
        if self.settings.reuse_search is not None:
            outcome.reused_search = self.settings.reuse_search
            return load_learned(self.settings.reuse_search, self.structure, criterion, self.settings.normalizer)
        result = search(
            self.module,
            self.structure,
            scores,
            self.budget,
            self.floor,
            self.data,
            self.settings.search,
            self.settings.seed,
            criterion,
            self.settings.search_checkpoint,
            self.progress,
            normalize=self.settings.normalizer,
        )
        outcome.search = result
        if self.settings.search.finalists and isinstance(self.data, UserLoop):
            outcome.notes.append(
                "no finalists were re-judged: with your own training loop every candidate is already fine-tuned "
                "and scored by your metric"
            )
        if self.settings.search.fitness == "probe" and result.scored_by == "loss":
            outcome.notes.append(
                "the search scored candidates by plain validation loss, not the probe asked for: the model has no "
                "single linear classifier fed a vector to refit"
            )
        if self.settings.search_file is not None:
            save_learned(
                self.settings.search_file, result, self.structure, criterion, self.settings.normalizer, self.budget
            )
        if not result.finished:
            outcome.notes.append(
                f"search stopped by the time box after {result.evaluations} of "
                f"{self.settings.search.population + self.settings.search.generations} evaluations"
            )
        return result.alpha, result.kappa

    def iterative(self) -> Outcome:
        """IAP / AIAP: approach the budget in rounds, rescoring by activations and fine-tuning in between."""
        rounds = self.settings.rounds
        original_sizes = self.structure.sizes()
        start, goal = self.budget.full(), self.budget.target
        module = self.module
        for index in range(1, rounds + 1):
            structure = _analyze(module, self.input_shape)
            step_target = goal if index == rounds else start * (goal / start) ** (index / rounds)
            step = Target(self.budget.kind, step_target)
            budget = bind(step, module, structure, self.predictor, channel_step=self.settings.channel_step)
            if budget.full() <= budget.target:
                continue
            floor = ranking.minimum_counts(structure.sizes(), budget.steps, self.settings.min_keep, original_sizes)
            scores = self.scores(module, structure)
            if self.settings.method == "iap":
                plan = ranking.uniform(scores, budget, floor)
            else:
                plan = ranking.rank(ranking.normalize(scores, "mean"), budget, floor)
            module = prune(module, structure, plan.keep)
            last = index == rounds
            epochs = self.settings.finetune.epochs if last else self.settings.round_epochs
            checkpoint = self.settings.train_checkpoint if last else None
            self.fine_tune(module, epochs, f"round {index}/{rounds} fine-tuning", checkpoint)
        return Outcome(module, self.structure, self.budget)


def _analyze(module: nn.Module, input_shape: tuple[int, int, int]) -> Structure:
    """`analyze` without its warning: what is left out reaches the user once, as the outcome's notes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return analyze(module, input_shape)


def prune_module(
    module: nn.Module,
    data: Dataset | UserLoop,
    target: Target,
    settings: PruneSettings,
    predictor: LatencyPredictor | None = None,
    progress: Progress | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> Outcome:
    """Prune `module` (left untouched) to `target` with `settings.method`; returns the fine-tuned result.

    `data` is a `Dataset` (edgeprune's own loop fine-tunes, scores and calibrates) or a `UserLoop` (the user's
    code fine-tunes and scores; only data-free criteria apply then); `input_shape` is needed with the latter.
    """
    settings.check()
    if isinstance(data, Dataset):
        shape = data.input_shape
    elif input_shape is None:
        raise EdgepruneError("pruning with the user's own loop needs the model's input shape")
    else:
        data.check(searches=settings.method == "legr" and settings.reuse_search is None)
        shape = input_shape
    pruner = _Pruner(module, data, shape, target, settings, predictor, progress)
    outcome = pruner.run()
    outcome.notes[:0] = pruner.structure.describe_excluded()  # the summary says what was left whole, and why
    return outcome
