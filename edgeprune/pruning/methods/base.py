"""What every pruning method shares: its settings, its outcome, the `Method` registry, and the `Job` a method
works on (the model's channel groups, the budget bound to it, the floor, the trainer, scoring and fine-tuning).

A method is one class registered in `METHODS` by name (`@METHODS.register("name")`), in a module that
`edgeprune.pruning.methods` imports: it chooses channels to the job's budget, cuts them and fine-tunes.
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
from edgeprune.pruning import criteria, ranking, schedule
from edgeprune.pruning.budget import Budget, LatencyPredictor, bind, check_channel_step
from edgeprune.pruning.finetune import TrainSettings
from edgeprune.pruning.groups import Structure, analyze
from edgeprune.pruning.groups import prune as cut
from edgeprune.pruning.ranking import Counts, Plan
from edgeprune.pruning.registry import Registry
from edgeprune.pruning.search import SearchResult, SearchSettings
from edgeprune.pruning.trainer import Trainer, as_trainer
from edgeprune.targets import Target


class Method:
    """How channels are chosen to meet a budget, then cut and fine-tuned (`prune`)."""

    name: str
    criterion = "l2"  # the default criterion
    # Per-group score normalisation before ranking (ranking.NORMALIZERS), from bench/results/pruning-before-fill.md:
    # mean normalisation lifted `global` over raw scores in every seed (+0.33 points at 0.5x, +0.92 at 0.3x of
    # resnet20's measured latency) and lowered `legr` (-0.96, -1.45: the search learns the layers' scales itself);
    # uniform keeps a share per layer, so no scale reaches it, and iap, aiap and pai were not measured either way.
    normalize = "none"
    searches = False  # runs the LeGR search (scores candidates with the trainer; may reuse a learned file)
    from_scratch = False  # trains the pruned network from fresh weights
    epochs = 5  # the default training after the cut

    def prune(self, job: Job) -> Outcome:
        raise NotImplementedError


METHODS: Registry[Method] = Registry("method")


class OneShot(Method):
    """Score once, plan once (`plan`), cut, then fine-tune: every method but the iterative ones. With
    `PruneSettings.steps` K > 1, the same in K steps under a decaying target (schedule.py), the fine-tune epochs
    split across them; what `prepare` learns (LeGR's search) is learned once, at the final target."""

    def start(self, job: Job) -> nn.Module:
        """The network to score and cut (the input model by default; it stays untouched)."""
        return job.module

    def prepare(self, job: Job, scores: dict[str, torch.Tensor], outcome: Outcome) -> None:
        """What the plans of every step share, learned on the input network at the final target (nothing here)."""

    def plan(self, job: Job, scores: dict[str, torch.Tensor], outcome: Outcome) -> Plan:
        raise NotImplementedError

    def prune(self, job: Job) -> Outcome:
        module = self.start(job)
        scores = job.scores(module, job.structure)
        outcome = Outcome(module, job.structure, job.budget)
        self.prepare(job, scores, outcome)
        goals = schedule.targets(job.budget.full(), job.budget.target, job.settings.steps)
        epochs = schedule.split_epochs(job.settings.finetune.epochs, len(goals))
        description = "training from scratch" if self.from_scratch else "fine-tuning"
        for index, (goal, step_epochs) in enumerate(zip(goals, epochs, strict=True), start=1):
            step = job if len(goals) == 1 else job.narrowed(module, goal)
            if index > 1:
                scores = job.scores(module, step.structure)
            if step.budget.full() > step.budget.target:
                module = cut(module, step.structure, self.plan(step, scores, outcome).keep)
            last = index == len(goals)
            told = description if len(goals) == 1 else f"step {index}/{len(goals)} {description}"
            job.fine_tune(module, step_epochs, told, job.settings.train_checkpoint if last else None)
        outcome.module = module
        return outcome


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
    steps: int = 1  # a one-shot method prunes in this many steps under a decaying target (schedule.py)
    seed: int = 0
    reuse_search: Path | None = None  # learned (alpha, kappa) to use instead of searching
    search_file: Path | None = None  # where a new search writes its learned (alpha, kappa)
    search_checkpoint: Path | None = None
    train_checkpoint: Path | None = None

    @property
    def method_class(self) -> type[Method]:
        return METHODS.get(self.method)

    @property
    def criterion_name(self) -> str:
        return self.criterion or self.method_class.criterion

    @property
    def normalizer(self) -> str:
        return self.normalize or self.method_class.normalize

    def check(self) -> None:
        method = self.method_class
        criteria.CRITERIA.get(self.criterion_name)
        if self.normalize is not None:
            ranking.check_normalizer(self.normalize)
        check_channel_step(self.channel_step)
        if self.rounds < 1 or self.round_epochs < 0:
            raise EdgepruneError("--rounds must be >= 1 and epoch counts >= 0")
        self.finetune.check()
        schedule.check_steps(self.steps)
        if self.steps > 1 and (not issubclass(method, OneShot) or method.from_scratch):
            raise EdgepruneError(
                f"--steps applies to the methods that prune a trained network in one shot, not '{self.method}'",
                hint="iap and aiap approach the budget in --rounds of their own; pai trains from scratch once",
            )
        if self.reuse_search is not None and not method.searches:
            raise EdgepruneError("--reuse-search applies to --method legr only")
        if method.searches:
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


class Job:
    """One model pruned to one target: its channel groups, the budget bound to it, each group's floor, and the
    scoring and fine-tuning every method does through the trainer."""

    def __init__(
        self,
        module: nn.Module,
        trainer: Trainer,
        input_shape: tuple[int, int, int],
        target: Target,
        settings: PruneSettings,
        predictor: LatencyPredictor | None,
        progress: Progress | None,
        original: Counts | None = None,
    ) -> None:
        self.module, self.trainer, self.settings = module, trainer, settings
        self.predictor, self.progress = predictor, progress
        self.input_shape = input_shape
        self.structure = analyze_quietly(module, self.input_shape)
        self.budget = bind(target, module, self.structure, predictor, channel_step=settings.channel_step)
        self.original = original or self.structure.sizes()  # the floor is a share of the input network's sizes
        sizes = self.structure.sizes()
        self.floor = ranking.minimum_counts(sizes, self.budget.steps, settings.min_keep, self.original)

    def narrowed(self, module: nn.Module, goal: float) -> Job:
        """The job of one step of a schedule: `module` (partly pruned) to `goal` in this job's unit, each group's
        floor still a share of the input network's size."""
        target = Target(self.budget.kind, goal)
        args = (self.trainer, self.input_shape, target, self.settings, self.predictor, self.progress)
        return Job(module, *args, original=self.original)

    def scores(self, module: nn.Module, structure: Structure) -> dict[str, torch.Tensor]:
        raw = criteria.score_drawn(
            self.settings.criterion_name,
            module,
            structure,
            self.trainer.calibration,
            batches=self.settings.calibration_batches,
        )
        return ranking.normalize(raw, self.settings.normalizer)

    def fine_tune(self, module: nn.Module, epochs: int, description: str, checkpoint: Path | None = None) -> None:
        shapes = sorted((k, tuple(v.shape)) for k, v in module.state_dict().items())
        fingerprint = f"{self.settings.method}:{self.settings.seed}:{shapes}"
        self.trainer.fine_tune(module, epochs, description, checkpoint, fingerprint)

    def run(self) -> Outcome:
        if not ranking.check_reachable(self.budget, self.settings.min_keep):
            note = f"the model already meets {self.budget.describe()} ({self.budget.describe(self.budget.full())})"
            return Outcome(copy.deepcopy(self.module), self.structure, self.budget, unchanged=True, notes=[note])
        return self.settings.method_class().prune(self)


def analyze_quietly(module: nn.Module, input_shape: tuple[int, int, int]) -> Structure:
    """`analyze` without its warning: what is left out reaches the user once, as the outcome's notes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return analyze(module, input_shape)


def prune_module(
    module: nn.Module,
    data: Dataset | Trainer,
    target: Target,
    settings: PruneSettings,
    predictor: LatencyPredictor | None = None,
    progress: Progress | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> Outcome:
    """Prune `module` (left untouched) to `target` with `settings.method`; returns the fine-tuned result.

    `data` is a `Dataset` (edgeprune's own loop fine-tunes, scores and calibrates on it) or another `Trainer`
    such as a `UserLoop` (the user's code fine-tunes and scores; only data-free criteria apply then), which
    knows no input shape: `input_shape` is needed with it.
    """
    settings.check()
    trainer = as_trainer(data, settings.finetune, settings.seed, progress)
    shape = trainer.input_shape or input_shape
    if shape is None:
        raise EdgepruneError("pruning with the user's own loop needs the model's input shape")
    trainer.check(searches=settings.method_class.searches and settings.reuse_search is None)
    job = Job(module, trainer, shape, target, settings, predictor, progress)
    outcome = job.run()
    outcome.notes[:0] = job.structure.describe_excluded()  # the summary says what was left whole, and why
    return outcome
