"""Training, fine-tuning and evaluation: one loop for baselines, pruned models and search candidates.

How a network is fitted is a `Recipe`, a small class registered in `RECIPES` by the name `--recipe` takes:
"sgd" (SGD with Nesterov momentum, weight decay 5e-4, a linear warm-up then cosine decay: the recipe CIFAR-style
networks are trained to convergence with) and "adam" (Adam with cosine decay: edgeprune's first recipe, which left
resnet20 at 87.5% on Fashion-MNIST, issue 31; still the default of a pruned network's short fine-tune, whose
benchmarks were measured with it). Augmentation (random crops and, where the data set allows, flips; `augment`) is
an option of either, off in the settings themselves: on short runs, such as fine-tunes, it costs accuracy (lenet5,
10 epochs on 4,000 Fashion-MNIST images: 80.7% with it, 85.8% without, Adam 82.0%; bench/results/train-recipe.md).
Run to convergence with it, resnet20 reached 93.3% (12 epochs on the whole split, bench/results/pruning-baselines.md):
`edgeprune train` turns it on by default (edgeprune.api.training).
Cross-entropy, optionally label-smoothed. A run with a checkpoint path saves model, optimiser, schedule and the
shuffling generator after every epoch, and a rerun with the same fingerprint continues from there.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from edgeprune import atomic
from edgeprune.data import Dataset, Split
from edgeprune.errors import EdgepruneError
from edgeprune.pruning.registry import Registry


class Recipe:
    """How a network is fitted: the optimiser and the defaults of the settings that go with it."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}  # TrainSettings fields this recipe sets unless the caller does

    def optimizer(self, parameters: Any, settings: TrainSettings) -> torch.optim.Optimizer:
        raise NotImplementedError


RECIPES: Registry[Recipe] = Registry("training recipe")


@RECIPES.register("sgd")
class NesterovSGD(Recipe):
    """SGD, momentum 0.9 with Nesterov's correction, weight decay 5e-4, lr 0.05 at batch 64 after a one-epoch
    linear warm-up (a large rate on fresh BatchNorm statistics diverges), then cosine decay: the recipe ResNets on
    CIFAR-like data converge with (He et al. 2016 train at 0.1 for batch 128)."""

    defaults: ClassVar[dict[str, Any]] = {"lr": 0.05, "weight_decay": 5e-4, "warmup_epochs": 1.0, "augment": False}

    def optimizer(self, parameters: Any, settings: TrainSettings) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            parameters, lr=settings.lr, momentum=settings.momentum, nesterov=True, weight_decay=settings.weight_decay
        )


@RECIPES.register("adam")
class AdamCosine(Recipe):
    """Adam at 1e-3 with weight decay 1e-4 and cosine decay, no warm-up: the first recipe."""

    defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "weight_decay": 1e-4, "warmup_epochs": 0.0, "augment": False}

    def optimizer(self, parameters: Any, settings: TrainSettings) -> torch.optim.Optimizer:
        return torch.optim.Adam(parameters, lr=settings.lr, weight_decay=settings.weight_decay)


@dataclass(frozen=True)
class TrainSettings:
    """How `train` fits a network. The plain constructor is the Adam recipe (what pruning's fine-tunes use);
    `TrainSettings.recipe_default(name, ...)` takes a recipe's defaults for whatever the caller leaves out."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    recipe: str = "adam"  # RECIPES
    momentum: float = 0.9  # the SGD recipe's
    warmup_epochs: float = 0.0  # linear warm-up, at most a fifth of the run
    label_smoothing: float = 0.0
    augment: bool = False  # random crops, and flips where the data set allows (data.augment)

    @classmethod
    def recipe_default(cls, recipe: str, **given: Any) -> TrainSettings:
        """Settings of `recipe` (a RECIPES name) with its own defaults, overridden by the `given` that are not
        None; an unknown recipe or field is a clear error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise EdgepruneError(f"unknown training setting(s): {', '.join(unknown)}")
        chosen = {k: v for k, v in given.items() if v is not None}
        return cls(**{**RECIPES.get(recipe).defaults, **chosen, "recipe": recipe})

    @classmethod
    def variant(cls, name: str, **given: Any) -> TrainSettings:
        """`recipe_default` of a variant as the benchmarks name it: a recipe, "+aug" switching augmentation on
        ("sgd", "sgd+aug", "adam")."""
        recipe, plus, extra = name.partition("+")
        if plus and extra != "aug":
            raise EdgepruneError(f"unknown training variant {name!r}: a recipe, optionally '+aug'")
        return cls.recipe_default(recipe, **{**given, **({"augment": True} if plus else {})})

    def check(self) -> None:
        """Before any work: a zero batch or a negative rate would fail deep inside torch, minutes later."""
        if self.epochs < 0 or self.batch_size < 1 or not (math.isfinite(self.lr) and self.lr > 0):
            raise EdgepruneError("epochs must be >= 0, --batch-size >= 1 and --lr a positive number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise EdgepruneError("weight decay must be >= 0")
        if self.recipe not in RECIPES:
            RECIPES.get(self.recipe)  # raises the registry's "unknown training recipe" with the choices
        if not 0.0 <= self.momentum < 1.0 or not self.warmup_epochs >= 0.0:
            raise EdgepruneError("momentum must be in [0, 1) and the warm-up >= 0 epochs")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise EdgepruneError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")


def schedule_factor(step: int, total: int, warmup: int) -> float:
    """The learning rate's multiplier at `step` of `total`: linear from 1/warmup up to 1 over `warmup` steps,
    then a cosine from 1 down to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def initialize(module: nn.Module, seed: int) -> None:
    """Fresh weights drawn from a local RNG seeded by `seed` (the global RNG state is left as it was).

    Zoo models are built with torch's global RNG; re-drawing them here makes training reproducible by seed.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for layer in module.modules():
            if layer is not module and hasattr(layer, "reset_parameters"):
                layer.reset_parameters()


def evaluate(module: nn.Module, data: Dataset, split: Split, batch_size: int = 256) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over a whole split, in eval mode."""
    was_training = module.training
    module.eval()
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for inputs, labels in data.batches(split, batch_size):
            logits = module(inputs)
            total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
    module.train(was_training)
    return total_loss / max(1, len(split)), correct / max(1, len(split))


def loss_on(module: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean loss on one prepared batch, in eval mode (how search candidates are scored)."""
    was_training = module.training
    module.eval()
    with torch.no_grad():
        loss = float(F.cross_entropy(module(inputs), labels))
    module.train(was_training)
    return loss


def divergence(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || model) per example, averaged: how far `logits`' class probabilities are from `teacher`'s."""
    return F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(teacher, dim=1), log_target=True, reduction="batchmean")


def divergence_on(module: nn.Module, inputs: torch.Tensor, teacher: torch.Tensor) -> float:
    """`divergence` of `module` on one prepared batch from the `teacher` logits, in eval mode."""
    was_training = module.training
    module.eval()
    with torch.no_grad():
        value = float(divergence(module(inputs), teacher))
    module.train(was_training)
    return value


def train_steps(
    module: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    after_step: Callable[[], None] | None = None,
    distill: bool = False,
) -> None:
    """A short fixed fine-tune (LeGR's tau steps): fresh Adam, constant rate, the given batches in order;
    with `distill` each batch's second item is a teacher's logits, and the loss the `divergence` from them."""
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    loss = divergence if distill else F.cross_entropy
    module.train()
    for inputs, targets in batches:
        optimizer.zero_grad(set_to_none=True)
        loss(module(inputs), targets).backward()
        optimizer.step()
        if after_step is not None:
            after_step()
    module.eval()


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Recompute every BatchNorm's running statistics from `batches` (forward passes only, equal weights).

    After channels are removed, the next layers' activations no longer match the statistics the unpruned
    network collected, and a few fine-tuning steps (momentum 0.1) replace only part of them: scored in eval
    mode, a candidate is then judged by that mismatch more than by what it can still learn. Fresh statistics
    ("adaptive BN", EagleEye, ECCV 2020) make a short evaluation track the accuracy after fine-tuning."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or not batches:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    was_training = module.training
    module.train()
    for inputs, _ in batches:
        module(inputs)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    module.train(was_training)


@contextlib.contextmanager
def _task(progress: Progress | None, description: str, total: int) -> Iterator[Callable[..., None]]:
    if progress is None:
        yield lambda **_: None
        return
    task = progress.add_task(description, total=total)
    try:
        yield lambda **kw: progress.update(task, **kw)
    finally:
        progress.remove_task(task)


def train(
    module: nn.Module,
    data: Dataset,
    settings: TrainSettings,
    generator: torch.Generator,
    progress: Progress | None = None,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    description: str = "training",
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> float:
    """Train in place for `settings.epochs` epochs; returns the last epoch's mean training loss. `on_epoch(epoch,
    mean loss, seconds)` is called after each epoch is checkpointed (a long run's log of how it converges);
    `seconds` is the run's training time so far, the sessions before a resume included (the checkpoint keeps
    it), so a baseline trained over several sessions states what it cost in all."""
    if settings.epochs <= 0:
        return float("nan")
    settings.check()
    steps_per_epoch = -(-len(data.train) // settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    warmup = min(round(settings.warmup_epochs * steps_per_epoch), total_steps // 5)
    optimizer = RECIPES.get(settings.recipe)().optimizer(module.parameters(), settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule_factor(step, total_steps, warmup))
    start, last_loss, before = 0, float("nan"), 0.0
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("fingerprint") == fingerprint and state.get("epochs") == settings.epochs:
            module.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            generator.set_state(state["generator"])
            start, last_loss = int(state["epoch"]), float(state["loss"])
            before = float(state.get("seconds", 0.0))  # checkpoints from before it was kept: this session only
    started = time.monotonic()
    module.train()
    with _task(progress, description, total_steps) as update:
        update(completed=start * steps_per_epoch)
        for epoch in range(start, settings.epochs):
            loss_sum, seen = 0.0, 0
            for inputs, labels in data.batches(data.train, settings.batch_size, generator, settings.augment):
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(module(inputs), labels, label_smoothing=settings.label_smoothing)
                loss.backward()
                optimizer.step()
                schedule.step()
                loss_sum += float(loss.detach()) * len(labels)
                seen += len(labels)
                shown = f"{description} epoch {epoch + 1}/{settings.epochs} loss {loss_sum / seen:.3f}"
                update(advance=1, description=shown)
            last_loss = loss_sum / max(1, seen)
            seconds = before + time.monotonic() - started
            if checkpoint is not None:
                state = {
                    "fingerprint": fingerprint,
                    "epochs": settings.epochs,
                    "epoch": epoch + 1,
                    "loss": last_loss,
                    "model": module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "generator": generator.get_state(),
                    "seconds": seconds,
                }
                with atomic.atomic_path(checkpoint) as tmp:
                    torch.save(state, tmp)
            if on_epoch is not None:
                on_epoch(epoch + 1, last_loss, seconds)
                module.train()
    module.eval()
    return last_loss
