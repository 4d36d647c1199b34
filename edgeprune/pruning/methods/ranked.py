"""The methods that rank every channel of the network together (`ranking.rank`):

legr     global ranking with meta-learned per-group (alpha, kappa) (Chin et al.; one search, many budgets)
global   global ranking of the raw scores (alpha = 1, kappa = 0)
pai      pruning at initialisation (after Reconvene): score the freshly initialised network (SNIP), remove
         the least sensitive channels by global ranking, then train the small network from scratch
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeprune.pruning import ranking
from edgeprune.pruning.finetune import initialize
from edgeprune.pruning.methods.base import METHODS, Job, OneShot, Outcome
from edgeprune.pruning.ranking import Plan
from edgeprune.pruning.search import load_learned, save_learned, search


@METHODS.register("legr")
class Legr(OneShot):
    searches = True
    alpha: dict[str, float]  # learned by `prepare`, once, on the input network at the final target
    kappa: dict[str, float]

    def prepare(self, job: Job, scores: dict[str, torch.Tensor], outcome: Outcome) -> None:
        self.alpha, self.kappa = self.learned(job, scores, outcome)

    # (scores, budget, floor, alpha, kappa) -> Plan: the rule every plan of the method is made by, the search's
    # candidates included, so that the search optimises what ships
    planner = staticmethod(ranking.rank)

    def plan(self, job: Job, scores: dict[str, torch.Tensor], outcome: Outcome) -> Plan:
        return self.planner(scores, job.budget, job.floor, self.alpha, self.kappa)

    def learned(self, job: Job, scores: dict[str, torch.Tensor], outcome: Outcome) -> tuple[dict, dict]:
        """The (alpha, kappa) a file holds (`reuse_search`), else the ones a new search learns."""
        settings = job.settings
        criterion = settings.criterion_name
        if settings.reuse_search is not None:
            outcome.reused_search = settings.reuse_search
            return load_learned(settings.reuse_search, job.structure, criterion, settings.normalizer)
        result = search(
            job.module,
            job.structure,
            scores,
            job.budget,
            job.floor,
            job.trainer,
            settings.search,
            settings.seed,
            criterion,
            settings.search_checkpoint,
            job.progress,
            normalize=settings.normalizer,
            planner=self.planner,
        )
        outcome.search = result
        if settings.search.finalists and not result.finalists:
            outcome.notes.append(
                "no finalists were re-judged: with your own training loop every candidate is already fine-tuned "
                "and scored by your metric"
            )
        if settings.search.fitness == "probe" and result.scored_by == "adaptive-bn":
            outcome.notes.append(
                "the search scored candidates by plain validation loss, not the probe asked for: the model has no "
                "single linear classifier fed a vector to refit"
            )
        if settings.search_file is not None:
            save_learned(settings.search_file, result, job.structure, criterion, settings.normalizer, job.budget)
        if not result.finished:
            outcome.notes.append(
                f"search stopped by the time box after {result.evaluations} of "
                f"{settings.search.population + settings.search.generations} evaluations"
            )
        return result.alpha, result.kappa


@METHODS.register("global")
class Global(OneShot):
    normalize = "mean"

    def plan(self, job: Job, scores: dict[str, torch.Tensor], outcome: Outcome) -> Plan:
        return ranking.rank(scores, job.budget, job.floor)


@METHODS.register("pai")
class Pai(Global):
    criterion = "snip"
    normalize = "none"
    from_scratch = True
    epochs = 10  # trains from scratch

    def start(self, job: Job) -> nn.Module:
        module = copy.deepcopy(job.module)
        initialize(module, job.settings.seed)
        return module
