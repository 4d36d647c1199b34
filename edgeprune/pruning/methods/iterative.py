"""The methods that approach the budget in rounds of (score, cut, fine-tune), the budget lowered geometrically:

iap      iterative activation-based pruning: each round scores by mean activation and removes the same share
         of every group (Zhao et al. 2022)
aiap     as iap with adaptive per-group thresholds: each group's activations are divided by their mean,
         recomputed every round, so a group is cut where its channels are weak relative to each other
"""

from __future__ import annotations

import torch

from edgeprune.pruning import ranking
from edgeprune.pruning.budget import Budget, bind
from edgeprune.pruning.groups import prune as cut
from edgeprune.pruning.methods.base import METHODS, Job, Method, Outcome, analyze_quietly
from edgeprune.pruning.ranking import Counts, Plan
from edgeprune.targets import Target


class Iterative(Method):
    criterion = "activation"

    def round_plan(self, scores: dict[str, torch.Tensor], budget: Budget, floor: Counts) -> Plan:
        """Which channels one round keeps, on the round's network and budget."""
        raise NotImplementedError

    def prune(self, job: Job) -> Outcome:
        settings = job.settings
        rounds = settings.rounds
        original_sizes = job.structure.sizes()
        start, goal = job.budget.full(), job.budget.target
        module = job.module
        for index in range(1, rounds + 1):
            structure = analyze_quietly(module, job.input_shape)
            step_target = goal if index == rounds else start * (goal / start) ** (index / rounds)
            step = Target(job.budget.kind, step_target)
            budget = bind(step, module, structure, job.predictor, channel_step=settings.channel_step)
            if budget.full() <= budget.target:
                continue
            floor = ranking.minimum_counts(structure.sizes(), budget.steps, settings.min_keep, original_sizes)
            plan = self.round_plan(job.scores(module, structure), budget, floor)
            module = cut(module, structure, plan.keep)
            last = index == rounds
            epochs = settings.finetune.epochs if last else settings.round_epochs
            checkpoint = settings.train_checkpoint if last else None
            job.fine_tune(module, epochs, f"round {index}/{rounds} fine-tuning", checkpoint)
        return Outcome(module, job.structure, job.budget)


@METHODS.register("iap")
class Iap(Iterative):
    def round_plan(self, scores: dict[str, torch.Tensor], budget: Budget, floor: Counts) -> Plan:
        return ranking.uniform(scores, budget, floor)


@METHODS.register("aiap")
class Aiap(Iterative):
    def round_plan(self, scores: dict[str, torch.Tensor], budget: Budget, floor: Counts) -> Plan:
        return ranking.rank(ranking.normalize(scores, "mean"), budget, floor)
