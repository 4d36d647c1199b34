"""Training, fine-tuning and evaluation: one loop for baselines, pruned models and search candidates.

Adam with cosine decay, cross-entropy. A run with a checkpoint path saves model, optimiser, schedule and the
shuffling generator after every epoch, and a rerun with the same fingerprint continues from there.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from edgeprune import atomic
from edgeprune.data import Dataset, Split
from edgeprune.errors import EdgepruneError


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4

    def check(self) -> None:
        """Before any work: a zero batch or a negative rate would fail deep inside torch, minutes later."""
        if self.epochs < 0 or self.batch_size < 1 or not (math.isfinite(self.lr) and self.lr > 0):
            raise EdgepruneError("epochs must be >= 0, --batch-size >= 1 and --lr a positive number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise EdgepruneError("weight decay must be >= 0")


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


def train_steps(
    module: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    after_step: Callable[[], None] | None = None,
) -> None:
    """A short fixed fine-tune (LeGR's tau steps): fresh Adam, constant rate, the given batches in order."""
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for inputs, labels in batches:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(module(inputs), labels).backward()
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
) -> float:
    """Train in place for `settings.epochs` epochs; returns the last epoch's mean training loss."""
    if settings.epochs <= 0:
        return float("nan")
    steps_per_epoch = -(-len(data.train) // settings.batch_size)
    optimizer = torch.optim.Adam(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs * steps_per_epoch)
    start, last_loss = 0, float("nan")
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("fingerprint") == fingerprint and state.get("epochs") == settings.epochs:
            module.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            generator.set_state(state["generator"])
            start, last_loss = int(state["epoch"]), float(state["loss"])
    module.train()
    with _task(progress, description, settings.epochs * steps_per_epoch) as update:
        update(completed=start * steps_per_epoch)
        for epoch in range(start, settings.epochs):
            total, seen = 0.0, 0
            for inputs, labels in data.batches(data.train, settings.batch_size, generator):
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(module(inputs), labels)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * len(labels)
                seen += len(labels)
                update(
                    advance=1, description=f"{description} epoch {epoch + 1}/{settings.epochs} loss {total / seen:.3f}"
                )
            last_loss = total / max(1, seen)
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
                }
                with atomic.atomic_path(checkpoint) as tmp:
                    torch.save(state, tmp)
    module.eval()
    return last_loss
