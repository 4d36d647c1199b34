"""The self-check every channel group passes before it is offered, and `analyze`, which traces and checks.

Channels are silenced, removed by the real surgery, and the outputs must stay the same (and the predicted
FLOPs must match the pruned module's). Groups that fail are found by bisection and left out with a warning
naming the layers and the reason; the check stops at a time limit, leaving out what it did not reach.
"""

from __future__ import annotations

import copy
import time
import warnings

import torch
from torch import fx, nn

from edgeprune.errors import EdgepruneError
from edgeprune.pruning import cost
from edgeprune.pruning.groups.structure import Structure
from edgeprune.pruning.groups.surgery import prune
from edgeprune.pruning.groups.trace import build_structure, draft_groups

ANALYSIS_SECONDS = 120.0  # for the checks; groups not checked by then are left out


def _passes_check(module: nn.Module, structure: Structure, names: list[str], seed: int) -> bool:
    """Silence a random third of the units of `names`, remove them by surgery: outputs and FLOPs must hold."""

    rng = torch.Generator().manual_seed(seed)
    work = copy.deepcopy(module).eval()
    keep: dict[str, list[int]] = {}
    with torch.no_grad():
        for name in names:
            group = structure.groups[name]
            order = torch.randperm(group.size, generator=rng).tolist()
            removed = order[: max(1, group.size // 3)]
            keep[name] = sorted(order[len(removed) :])
            for member in (*group.layers, *group.norms):
                layer = work.get_submodule(member)
                channels = torch.tensor(group.channels(member, removed))
                for tensor in (layer.weight, getattr(layer, "bias", None)):
                    if tensor is not None:
                        tensor.index_fill_(0, channels, 0.0)
        inputs = torch.randn(2, *structure.input_shape, generator=rng)
        try:
            before = work(inputs)
            pruned = prune(work, structure, keep).eval()
            after = pruned(inputs)
        except Exception:  # noqa: BLE001 - a failed surgery or forward is what the check looks for
            return False
    counts = {name: len(kept) for name, kept in keep.items()}
    if cost.predict(structure, counts) != cost.measure(pruned, structure.input_shape):
        return False
    scale = float(before.abs().max()) or 1.0
    return after.shape == before.shape and bool(torch.allclose(after, before, rtol=1e-4, atol=1e-5 * scale))


def _checked(module: nn.Module, structure: Structure, deadline: float) -> dict[str, str]:
    """Groups that fail the check, found by bisection (one surgery when every group is sound)."""
    failed: dict[str, str] = {}

    def visit(names: list[str], seed: int) -> None:
        if time.monotonic() > deadline:
            failed.update({name: "analysis time limit reached" for name in names})
        elif not _passes_check(module, structure, names, seed):
            if len(names) == 1:
                failed[names[0]] = "removing its channels changes the outputs (an op the surgery cannot follow)"
            else:
                half = len(names) // 2
                visit(names[:half], seed + 1)
                visit(names[half:], seed + 2)

    visit(list(structure.groups), 0)
    return failed


def analyze(module: nn.Module, input_shape: tuple[int, int, int], time_limit: float = ANALYSIS_SECONDS) -> Structure:
    """Find the channel groups of `module` and the size model of every layer; raises if nothing is prunable.

    What cannot be pruned is left out with a warning (and listed in `Structure.excluded`), never an error.
    """
    if not isinstance(module, fx.GraphModule):
        raise EdgepruneError("the model must be a torch.fx GraphModule (load it with edgeprune.models.io)")
    deadline = time.monotonic() + time_limit
    draft = draft_groups(module, input_shape)
    structure = build_structure(module, input_shape, draft.units, draft.excluded)
    failed = _checked(module, structure, deadline) if structure.groups else {}
    if failed:
        for name in failed:
            for layer in structure.groups[name].layers:
                draft.excluded.setdefault(layer, failed[name])
        kept = {name: units for name, units in draft.units.items() if name not in failed}
        structure = build_structure(module, input_shape, kept, draft.excluded)
    if not structure.groups:
        raise EdgepruneError(
            "the model has no prunable channels (no conv / linear layer whose outputs can be removed)",
            hint="pruning needs at least one hidden Conv2d or Linear layer before the classifier"
            + "".join(f"; {line}" for line in structure.describe_excluded()),
        )
    if structure.describe_excluded():
        warnings.warn("; ".join(structure.describe_excluded()), stacklevel=2)
    return structure
