"""uniform: the same share of channels removed from every group (within a group, the lowest scores go).

The whole of a method: one class, registered by name. `edgeprune.pruning.methods` imports this module last.
"""

from __future__ import annotations

import torch

from edgeprune.pruning import ranking
from edgeprune.pruning.methods.base import METHODS, Job, OneShot, Outcome
from edgeprune.pruning.ranking import Plan


@METHODS.register("uniform")
class Uniform(OneShot):
    def plan(self, job: Job, scores: dict[str, torch.Tensor], outcome: Outcome) -> Plan:
        return ranking.uniform(scores, job.budget, job.floor)
