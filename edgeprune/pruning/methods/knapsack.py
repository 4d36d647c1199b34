"""The latency-aware method beside legr:

legr-knapsack   LeGR's learned (alpha, kappa), but channels chosen by value per unit of cost saved
                (`edgeprune.pruning.knapsack`, after HALP) instead of by the global ranking: a channel set that
                saves more milliseconds (FLOPs, params) for the same importance goes first

The search that learns (alpha, kappa) scores its candidates on knapsack plans too (`Legr.planner`), so it
optimises the plans this method ships, not the ranking's. Unmeasured against legr and the peer so far.
"""

from __future__ import annotations

from edgeprune.pruning import knapsack
from edgeprune.pruning.methods.base import METHODS
from edgeprune.pruning.methods.ranked import Legr


@METHODS.register("legr-knapsack")
class LegrKnapsack(Legr):
    planner = staticmethod(knapsack.select)
