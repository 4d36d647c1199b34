"""Channel groups of a model and what each layer's size depends on, split by job:

structure.py  the data model: `ChannelGroup`, `Structure` (per layer, which groups set its widths), widths
              at given channel counts
trace.py      fx channel tracing with union-find into draft groups, and the `Structure` built from them
check.py      the self-check by bisection every group passes before it is offered; `analyze` (trace + check)
surgery.py    `prune` (physical surgery on a copy) and `skeleton` (a copy sized to channel counts, for latency)
"""

# `name as name`: re-exported, what the rest of pruning uses
from edgeprune.pruning.groups.check import analyze as analyze
from edgeprune.pruning.groups.structure import ChannelGroup as ChannelGroup
from edgeprune.pruning.groups.structure import GroupedLayer as GroupedLayer
from edgeprune.pruning.groups.structure import Structure as Structure
from edgeprune.pruning.groups.structure import classifier_layers as classifier_layers
from edgeprune.pruning.groups.structure import layer_widths as layer_widths
from edgeprune.pruning.groups.structure import norm_width as norm_width
from edgeprune.pruning.groups.structure import unit_scores as unit_scores
from edgeprune.pruning.groups.surgery import prune as prune
from edgeprune.pruning.groups.surgery import skeleton as skeleton
