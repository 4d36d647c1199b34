"""Trainers: what pruning asks of training, whoever does it.

A method needs three things from training: calibration batches for a data-driven criterion, a fine-tune of
the pruned (or a search's candidate) network, and a score for a LeGR search candidate. `Trainer` is that
protocol; `OwnLoop` answers it with edgeprune's loop over a `Dataset`, `UserLoop` with the user's own
`finetune` / `evaluate` callbacks (edgeprune then never sees their data). Methods and the search ask the
trainer, never which kind it is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from edgeprune.data import Dataset
from edgeprune.errors import EdgepruneError
from edgeprune.pruning.finetune import TrainSettings, train
from edgeprune.pruning.fitness import FITNESSES, Scorer, adaptive_bn_scorer, finalist_rows
from edgeprune.pruning.groups import Structure, prune
from edgeprune.pruning.search_settings import SearchSettings

Batch = tuple[torch.Tensor, torch.Tensor]
Rng = np.random.Generator
Rows = np.ndarray  # training rows: one batch of indices into the training split per row


@dataclass(frozen=True)
class SearchFitness:
    """How a search scores candidates: `score`, the training rows it drew (checkpointed, so a resumed search
    scores on the same batches) and what the score is (`SearchResult.scored_by`)."""

    score: Scorer
    train_index: Rows
    scored_by: str


class Trainer(Protocol):
    """What pruning asks of training (see the module docstring)."""

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        """The input the trainer's data has, or None when the trainer does not know it."""
        ...

    def check(self, searches: bool) -> None:
        """Before any work; `searches` when the method runs the LeGR search."""
        ...

    def calibration(self, count: int) -> list[Batch] | None:
        """`count` training batches for a data-driven criterion, or None when the trainer lends no data."""
        ...

    def fine_tune(
        self, module: nn.Module, epochs: int, description: str, checkpoint: Path | None, fingerprint: str
    ) -> None:
        """Train `module` in place for `epochs`; a checkpoint with the same fingerprint resumes."""
        ...

    def search_fitness(
        self, module: nn.Module, structure: Structure, settings: SearchSettings, rng: Rng, rows: Rows | None
    ) -> SearchFitness:
        """The search's score for cuts of `module`; `rows` are a resumed search's training rows (None: draw)."""
        ...

    def finalist_judge(
        self, module: nn.Module, structure: Structure, settings: SearchSettings, seed: int
    ) -> Scorer | None:
        """The costlier score the search's finalists are re-judged by, or None when there is none."""
        ...


@dataclass
class OwnLoop:
    """edgeprune's own loop on a `Dataset`: fine-tunes with `settings` (less its epochs), every criterion
    calibrates on its training split, and search candidates are scored by the search's `Fitness` kind.
    One torch generator seeded by `seed` draws the calibration batches, then the fine-tune's shuffling."""

    data: Dataset
    settings: TrainSettings = TrainSettings()
    seed: int = 0
    progress: Progress | None = None

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.data.input_shape

    def check(self, searches: bool) -> None:
        """Nothing to check: the data set was loaded and checked against the model already."""

    def calibration(self, count: int) -> list[Batch]:
        return [self.data.sample(self.data.train, self.settings.batch_size, self.generator) for _ in range(count)]

    def fine_tune(
        self, module: nn.Module, epochs: int, description: str, checkpoint: Path | None, fingerprint: str
    ) -> None:
        settings = replace(self.settings, epochs=epochs)
        train(module, self.data, settings, self.generator, self.progress, checkpoint, fingerprint, description)

    def search_fitness(
        self, module: nn.Module, structure: Structure, settings: SearchSettings, rng: Rng, rows: Rows | None
    ) -> SearchFitness:
        kind = FITNESSES.get(settings.fitness)()
        if rows is None:
            count = kind.rows(module, structure, settings)
            rows = rng.integers(0, len(self.data.train), size=(count, settings.batch_size))
        score, scored_by = kind.scorer(module, structure, self.data, settings, rows)
        return SearchFitness(score, rows, scored_by)

    def finalist_judge(self, module: nn.Module, structure: Structure, settings: SearchSettings, seed: int) -> Scorer:
        return adaptive_bn_scorer(
            module,
            structure,
            self.data,
            replace(settings, steps=settings.finalist_steps, val_samples=settings.finalist_samples),
            finalist_rows(settings, seed, len(self.data.train)),
        )


class Finetuner(Protocol):
    """A user's own fine-tune: train `module` in place for `epochs` passes over their data (any optimiser,
    loss, augmentation). edgeprune's own loop (`train`) is the default; this is for code that has its own."""

    def __call__(self, module: nn.Module, epochs: int) -> None: ...


class Evaluator(Protocol):
    """A user's own quality measure of `module` (accuracy, mAP, ...): higher is better."""

    def __call__(self, module: nn.Module) -> float: ...


@dataclass(frozen=True)
class UserLoop:
    """Fine-tuning and scoring by the user's code instead of edgeprune's loop over a `Dataset`.

    Pruning then never touches data itself: the pruned model is fine-tuned with `finetune` (not at all
    without one), and each LeGR search candidate is cut, fine-tuned `search_epochs` epochs and scored with
    `evaluate`, which only the search needs.
    """

    finetune: Finetuner | None = None
    evaluate: Evaluator | None = None
    search_epochs: int = 1

    def check(self, searches: bool) -> None:
        """Before any work; `searches` when the method runs the LeGR search, which scores with `evaluate`."""
        if self.search_epochs < 0:
            raise EdgepruneError(f"search_epochs must be >= 0, got {self.search_epochs}")
        if searches and self.evaluate is None:
            raise EdgepruneError(
                "the LeGR search scores its candidates with your evaluate(model) -> float, and none was given",
                hint="pass evaluate=..., or choose a method without a search ('global', 'uniform')",
            )

    @property
    def input_shape(self) -> None:
        return None  # the user's data is theirs: the caller names the model's input

    def calibration(self, count: int) -> None:
        return None

    def fine_tune(
        self, module: nn.Module, epochs: int, description: str, checkpoint: Path | None, fingerprint: str
    ) -> None:
        """The user's fine-tune (none: the pruned model stays as cut); their code keeps its own checkpoints."""
        if self.finetune is not None:
            self.finetune(module, epochs)

    def search_fitness(
        self, module: nn.Module, structure: Structure, settings: SearchSettings, rng: Rng, rows: Rows | None
    ) -> SearchFitness:
        """Minus the user's metric after surgery and the user's short fine-tune: their code may use any
        optimiser, so masks could not be held at zero through it; the cut network is what it trains."""
        if self.evaluate is None:
            raise EdgepruneError("the LeGR search needs the user's evaluate function")
        evaluate, finetune = self.evaluate, self.finetune

        def score(keep: dict[str, list[int]]) -> float:
            candidate = prune(module, structure, keep)  # a new module: the input stays untouched
            if finetune is not None:
                finetune(candidate, self.search_epochs)
            return -float(evaluate(candidate))

        none = np.zeros((0, settings.batch_size), dtype=np.int64)  # the user's code draws its own data
        return SearchFitness(score, none if rows is None else rows, "metric")

    def finalist_judge(self, module: nn.Module, structure: Structure, settings: SearchSettings, seed: int) -> None:
        """None: every candidate was already fine-tuned and scored by the user's metric."""
        return None


def as_trainer(
    data: Dataset | Trainer, settings: TrainSettings | None = None, seed: int = 0, progress: Progress | None = None
) -> Trainer:
    """A data set as edgeprune's own loop on it (with these settings); any other trainer as it is."""
    if isinstance(data, Dataset):
        return OwnLoop(data, settings or TrainSettings(), seed, progress)
    return data
