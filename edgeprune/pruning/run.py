"""Stage entry points over model bundles: train a baseline, prune to a budget, and the summary each reports.

These are what the CLI and the pipeline call; they never write files except the checkpoints they are given.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from edgeprune.data import Dataset
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import ModelBundle
from edgeprune.network import is_prunable, widths
from edgeprune.pruning import cost
from edgeprune.pruning.budget import LatencyPredictor
from edgeprune.pruning.finetune import TrainSettings, evaluate, initialize, train
from edgeprune.pruning.methods import Outcome, PruneSettings, prune_module
from edgeprune.targets import Target


def check_fit(bundle: ModelBundle, data: Dataset) -> None:
    """The data must match the model: same class count, and the model must accept its input size."""
    if data.num_classes != bundle.num_classes:
        raise EdgepruneError(
            f"the model predicts {bundle.num_classes} classes but '{data.spec}' has {data.num_classes}",
            hint="train a model for this data set first: edgeprune train MODEL --data ...",
        )
    if data.input_shape != bundle.input_shape:
        raise EdgepruneError(f"data prepared for {data.input_shape}, model expects {bundle.input_shape}")


def train_bundle(
    bundle: ModelBundle,
    data: Dataset,
    settings: TrainSettings,
    seed: int = 0,
    progress: Progress | None = None,
    checkpoint: Any = None,
    on_epoch: Callable[[int, float, nn.Module, float], None] | None = None,
) -> tuple[ModelBundle, dict[str, Any]]:
    """Train a copy of the bundle's module; the result's meta records data set, accuracy and normalisation.
    `on_epoch(epoch, mean loss, module, seconds)` after every epoch (a caller's log of how a long run converges).
    The report's seconds include the sessions before a resume: what the whole training cost."""
    check_fit(bundle, data)
    started = time.monotonic()
    module = copy.deepcopy(bundle.module)
    if not bundle.trained:
        initialize(module, seed)
    generator = torch.Generator().manual_seed(seed)
    fingerprint = f"train:{bundle.name}:{data.spec}:{seed}:{settings}"
    last_epoch = [0.0, started]  # (training seconds, all sessions, at the last epoch this call ran; when)

    def after(epoch: int, loss: float, seconds: float) -> None:
        last_epoch[:] = [seconds, time.monotonic()]
        if on_epoch is not None:
            on_epoch(epoch, loss, module, seconds)

    loss = train(module, data, settings, generator, progress, checkpoint, fingerprint, "training", after)
    _, accuracy = evaluate(module, data, data.test)
    seconds = last_epoch[0] + time.monotonic() - last_epoch[1]  # and the evaluation since
    meta = {
        **bundle.meta,
        "trained": True,
        "dataset": data.spec,
        "accuracy": accuracy,
        "normalization": data.normalization,
        "training": {
            "epochs": settings.epochs,
            "batch_size": settings.batch_size,
            "lr": settings.lr,
            "seed": seed,
            "train_loss": loss,
            "splits": data.sizes,
        },
    }
    report = {"accuracy": accuracy, "epochs": settings.epochs, "seconds": round(seconds, 2), "train_loss": loss}
    return ModelBundle(module, bundle.input_shape, bundle.num_classes, meta), report


def layer_table(before: nn.Module, after: nn.Module) -> list[dict[str, Any]]:
    """Output channels of every conv / linear layer, before and after pruning, in model order."""
    after_modules = dict(after.named_modules())
    return [
        {"name": name, "before": widths(layer)[1], "after": widths(after_modules[name])[1]}
        for name, layer in before.named_modules()
        if is_prunable(layer)
    ]


def measure_outcome(
    before: nn.Module, outcome: Outcome, input_shape: tuple[int, int, int], predictor: LatencyPredictor | None
) -> dict[str, Any]:
    """What every pruning summary reports of the result: whether it meets its budget, and its FLOPs, parameters
    and predicted latency (None without a device) beside the original model's."""
    flops, params = cost.measure(outcome.module, input_shape)
    original_flops, original_params = cost.measure(before, input_shape)
    predicted = original_predicted = None
    if predictor is not None:
        predicted = predictor.predict_ms(outcome.module, input_shape)
        original_predicted = predictor.predict_ms(before, input_shape)
    achieved = {"ms": predicted, "flops": flops, "params": params}[outcome.budget.kind]
    return {
        "within_budget": achieved is not None and achieved <= outcome.budget.target * (1 + 1e-9),
        "unchanged": outcome.unchanged,
        "predicted_ms": predicted,
        "original_predicted_ms": original_predicted,
        "flops": flops,
        "params": params,
        "original_flops": original_flops,
        "original_params": original_params,
    }


def prune_bundle(
    bundle: ModelBundle,
    data: Dataset,
    target: Target,
    settings: PruneSettings,
    predictor: LatencyPredictor | None = None,
    progress: Progress | None = None,
) -> tuple[ModelBundle, dict[str, Any]]:
    """Prune to `target`, fine-tune, and measure: returns the pruned bundle and the summary (JSON-ready)."""
    check_fit(bundle, data)
    started = time.monotonic()
    _, accuracy_before = evaluate(bundle.module, data, data.test)
    outcome = prune_module(bundle.module, data, target, settings, predictor, progress)
    _, accuracy_after = evaluate(outcome.module, data, data.test)
    measured = measure_outcome(bundle.module, outcome, bundle.input_shape, predictor)
    summary: dict[str, Any] = {
        "method": settings.method,
        "criterion": settings.criterion_name,
        "normalize": settings.normalizer,
        f"target_{target.kind}": outcome.budget.target,
        "target": target.describe(),
        **measured,
        "accuracy_before": accuracy_before,
        "accuracy_after": accuracy_after,
        "search_seconds": round(outcome.search.seconds, 2) if outcome.search else 0.0,
        "search_evaluations": outcome.search.evaluations if outcome.search else 0,
        "search_finished": outcome.search.finished if outcome.search else False,
        "search_fitness": outcome.search.fitness if outcome.search else None,
        "search_scored_by": outcome.search.scored_by if outcome.search else None,
        "search_candidates": [
            {f"predicted_{target.kind}": cost, "val_loss": loss}
            for loss, cost in zip(outcome.search.history, outcome.search.costs, strict=False)
            if cost is not None and math.isfinite(loss)
        ]
        if outcome.search
        else [],
        "identity_fitness": outcome.search.identity_fitness if outcome.search else None,
        # each re-judged candidate: its index in the search, its search score, its loss after a short fine-tune
        "search_finalists": [asdict(f) for f in outcome.search.finalists] if outcome.search else [],
        "reused_search": str(outcome.reused_search) if outcome.reused_search else None,
        "finetune_epochs": 0 if outcome.unchanged else settings.finetune.epochs,
        "steps": settings.steps,  # cuts toward the target, the fine-tune epochs split across them (schedule.py)
        "dataset": data.spec,
        "seed": settings.seed,
        "seconds": round(time.monotonic() - started, 2),
        "notes": outcome.notes,
        "layers": layer_table(bundle.module, outcome.module),
    }
    trained = settings.finetune.epochs > 0 if settings.method_class.from_scratch else bundle.trained
    meta = {
        **bundle.meta,
        "trained": trained,
        "dataset": data.spec,
        "accuracy": accuracy_after,
        "normalization": bundle.meta.get("normalization", data.normalization),
        "pruning": {k: v for k, v in summary.items() if k != "layers"},
    }
    return ModelBundle(outcome.module, bundle.input_shape, bundle.num_classes, meta), summary
