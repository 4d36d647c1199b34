"""The latency-aware method beside legr:

legr-knapsack   LeGR's learned (alpha, kappa), but channels chosen by value per unit of cost saved
                (`edgeprune.pruning.knapsack`, after HALP) instead of by the global ranking: a channel set that
                saves more milliseconds (FLOPs, params) for the same importance goes first

The search that learns (alpha, kappa) still scores its candidates on the ranking's plans (search.py); only the
final plan, of every step, is the knapsack's. Unmeasured against legr and the peer so far.
"""

from __future__ import annotations

import torch

from edgeprune.pruning import knapsack
from edgeprune.pruning.methods.base import METHODS, Job, Outcome
from edgeprune.pruning.methods.ranked import Legr
from edgeprune.pruning.ranking import Plan


@METHODS.register("legr-knapsack")
class LegrKnapsack(Legr):
    def plan(self, job: Job, scores: dict[str, torch.Tensor], outcome: Outcome) -> Plan:
        return knapsack.select(scores, job.budget, job.floor, self.alpha, self.kappa)
