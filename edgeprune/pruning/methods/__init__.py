"""The pruning methods: how channels are chosen to meet a budget, then the surgery and the fine-tune.

Each method is one class registered in `METHODS` (methods/base.py) by name; importing this package registers
them all, in the order the CLI lists them: legr, global and pai (ranked.py), iap and aiap (iterative.py),
uniform (uniform.py), legr-knapsack (knapsack.py). A new method is a module here with its class, imported below.
"""

# `name as name`: re-exported for the stages, the API and the tests
from edgeprune.pruning.methods.base import METHODS as METHODS
from edgeprune.pruning.methods.base import Outcome as Outcome
from edgeprune.pruning.methods.base import PruneSettings as PruneSettings
from edgeprune.pruning.methods.base import prune_module as prune_module

# isort: off
# the order of registration is the order `METHODS` lists the names in
from edgeprune.pruning.methods import ranked as ranked
from edgeprune.pruning.methods import iterative as iterative
from edgeprune.pruning.methods import uniform as uniform
from edgeprune.pruning.methods import knapsack as knapsack

# isort: on
