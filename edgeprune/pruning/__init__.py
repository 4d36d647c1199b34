"""Pruning: channel groups and surgery (a channel trace of the fx graph), criteria, LeGR ranking and search, methods.

Other stages call `train_bundle` and `prune_bundle` (edgeprune.pruning.run) with a data set and a target.
The strategies are small registered classes (registry.py): a criterion is a `Criterion` in criteria.py, a method
a `Method` in a module of methods/ (imported by methods/__init__.py), a budget kind a `Cost` in budget.py; what
training does for them is a `Trainer` (trainer.py: edgeprune's own loop on a data set, or the user's callbacks).
"""

from edgeprune.pruning.budget import LatencyPredictor
from edgeprune.pruning.finetune import TrainSettings
from edgeprune.pruning.methods import METHODS, PruneSettings
from edgeprune.pruning.run import prune_bundle, train_bundle
from edgeprune.pruning.search import SearchSettings
from edgeprune.targets import Target, parse_target

__all__ = [
    "METHODS",
    "LatencyPredictor",
    "PruneSettings",
    "SearchSettings",
    "Target",
    "TrainSettings",
    "parse_target",
    "prune_bundle",
    "train_bundle",
]
