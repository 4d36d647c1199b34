"""Importance criteria: one score per channel of every group (higher = more important).

Scores stay unnormalised so the scale differences between layers stay visible to the ranking (LeGR's
per-layer affine transform exists to compensate them); bn and the gradient criteria are group importances
as Torch-Pruning defines them (summed per channel within a member, averaged over the group's members).
Each criterion is a small class registered in `CRITERIA` by the name `--criterion` takes (its docstring says
what it scores); a new one is a class here with `@CRITERIA.register("name")`.
Every criterion works on a copy: the model's weights, gradients and BN statistics stay untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgeprune.data import Dataset
from edgeprune.errors import EdgepruneError
from edgeprune.network import Graph
from edgeprune.pruning.groups import Structure, unit_scores
from edgeprune.pruning.registry import Registry

Scores = dict[str, torch.Tensor]
Batches = list[tuple[torch.Tensor, torch.Tensor]]
_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Mish)
_ACTIVATION_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.silu, F.gelu, F.hardswish}


def _grad_product(tensor: torch.Tensor | None) -> torch.Tensor | None:
    if tensor is None:
        return None
    grad = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)
    return (tensor.detach() * grad).abs()


def _input_columns(layer: nn.Module, values: torch.Tensor) -> torch.Tensor:
    """Per input channel sums of a weight-shaped tensor (a grouped conv's column j serves one input per group)."""
    if isinstance(layer, nn.Linear):
        return values.sum(dim=0)
    per_out = layer.out_channels // layer.groups
    blocks = [values[b * per_out : (b + 1) * per_out].sum(dim=(0, 2, 3)) for b in range(layer.groups)]
    return torch.cat(blocks)


def _importance(module: nn.Module, structure: Structure, label: str) -> Scores:
    """Torch-Pruning's group importances, computed on our units: 'bn' is |gamma| of the group's BatchNorms,
    the gradient criteria |w * dL/dw| summed per channel over every member (filters, BatchNorm scale and
    shift, consumers' input columns), averaged over the members."""
    scores: Scores = {}
    for name, group in structure.groups.items():
        parts = []
        for member in group.norms:
            norm = module.get_submodule(member)
            if norm.weight is None:
                continue
            if label == "bn":
                per_channel = norm.weight.detach().abs()
            else:
                per_channel = _grad_product(norm.weight) + _grad_product(norm.bias)
            parts.append(unit_scores(per_channel, group, member))
        if label != "bn":
            for member in group.layers:
                parts.append(
                    unit_scores(_grad_product(module.get_submodule(member).weight).flatten(1).sum(1), group, member)
                )
            for member in group.consumers:
                layer = module.get_submodule(member)
                parts.append(
                    unit_scores(_input_columns(layer, _grad_product(layer.weight)), group, member, inputs=True)
                )
        if not parts:
            raise EdgepruneError(
                f"criterion '{label}' has nothing to score in group '{name}'",
                hint="'bn' needs a BatchNorm after every prunable layer; use l1 or l2 for this model",
            )
        scores[name] = torch.stack(parts).mean(dim=0).float()
    return scores


def _activation_after(graph_module: fx.GraphModule, layer: str) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The module whose output to observe for `layer` (its BN if one follows) and the activation applied next.

    Without an activation the channel's magnitude is taken (|x|), e.g. for linear bottlenecks.
    """
    graph = Graph(graph_module)
    node = next(n for n in graph_module.graph.nodes if n.op == "call_module" and n.target == layer)
    followed, user = graph.after_norm(node)
    observed = str(followed.target)
    if user is not None:
        module = graph.target_module(user)
        if isinstance(module, _ACTIVATION_MODULES):
            activation = copy.deepcopy(module)
            if hasattr(activation, "inplace"):
                activation.inplace = False
            return observed, activation
        if user.op == "call_function" and user.target in _ACTIVATION_FUNCTIONS:
            return observed, user.target  # type: ignore[return-value]
    return observed, torch.abs


class Criterion:
    """Scores every channel unit of every group of a model (higher = more important)."""

    name: str
    needs_data = False  # scores from calibration batches of training data

    def batches(self, asked: int) -> int:
        """How many calibration batches it draws when `asked` for that many."""
        return asked

    def score(self, module: nn.Module, structure: Structure, calibration: Batches) -> Scores:
        raise NotImplementedError


CRITERIA: Registry[Criterion] = Registry("criterion")


@CRITERIA.register("l1")
class L1(Criterion):
    """L1 norm of each channel's filters, averaged over the group's layers (as in LeGR and ILP)."""

    p = 1

    def score(self, module: nn.Module, structure: Structure, calibration: Batches) -> Scores:
        scores: Scores = {}
        for name, group in structure.groups.items():
            norms = []
            for layer in group.layers:
                per_channel = module.get_submodule(layer).weight.detach().flatten(1).norm(p=self.p, dim=1)
                norms.append(unit_scores(per_channel, group, layer))
            scores[name] = torch.stack(norms).mean(dim=0)
        return scores


@CRITERIA.register("l2")
class L2(L1):
    p = 2


@CRITERIA.register("taylor")
class Taylor(Criterion):
    """|w * dL/dw| with the loss gradient summed over calibration batches (Molchanov et al. 2019)."""

    needs_data = True

    def score(self, module: nn.Module, structure: Structure, calibration: Batches) -> Scores:
        work = copy.deepcopy(module).eval()  # eval: BN running statistics must not move
        work.zero_grad(set_to_none=True)
        for inputs, labels in calibration:
            F.cross_entropy(work(inputs), labels).backward()
        return _importance(work, structure, "taylor")


@CRITERIA.register("bn")
class BatchNormScale(Criterion):
    """|gamma| of the group's BatchNorms (network slimming)."""

    def score(self, module: nn.Module, structure: Structure, calibration: Batches) -> Scores:
        return _importance(module, structure, "bn")


@CRITERIA.register("activation")
class Activation(Criterion):
    """Mean post-activation of each channel over calibration batches (IAP)."""

    needs_data = True

    def score(self, module: nn.Module, structure: Structure, calibration: Batches) -> Scores:
        if not isinstance(module, fx.GraphModule):
            raise EdgepruneError("the activation criterion needs an fx GraphModule (load models with edgeprune)")
        work = copy.deepcopy(module).eval()
        sums: dict[str, torch.Tensor] = {}
        hooks = []
        watched: dict[str, list[str]] = {}
        for name, group in structure.groups.items():
            for layer in group.layers:
                observed, activation = _activation_after(work, layer)
                watched.setdefault(name, []).append(observed)

                def record(_m: nn.Module, _i: tuple, out: torch.Tensor, key: str = observed, act=activation) -> None:
                    value = act(out.detach())
                    per_channel = value.transpose(0, 1).reshape(value.shape[1], -1).mean(dim=1)
                    sums[key] = sums.get(key, 0) + per_channel

                hooks.append(work.get_submodule(observed).register_forward_hook(record))
        try:
            with torch.no_grad():
                for inputs, _labels in calibration:
                    work(inputs)
        finally:
            for hook in hooks:
                hook.remove()
        scores: Scores = {}
        for name, observed in watched.items():
            group = structure.groups[name]
            per_unit = [
                unit_scores(sums[seen], group, layer) for layer, seen in zip(group.layers, observed, strict=True)
            ]
            scores[name] = torch.stack(per_unit).mean(dim=0) / len(calibration)
        return scores


@CRITERIA.register("snip")
class Snip(Taylor):
    """|w * dL/dw| on one batch: SNIP's connection sensitivity, summed per channel (for untrained nets)."""

    def batches(self, asked: int) -> int:
        return 1


@CRITERIA.register("synflow")
class SynFlow(Criterion):
    """|w * dR/dw| with R the output sum of the network with |weights| on an all-ones input (data-free)."""

    def score(self, module: nn.Module, structure: Structure, calibration: Batches) -> Scores:
        work = copy.deepcopy(module).double().eval()
        # SynFlow scores the linearised network: with positive weights and input, ReLU is the identity anyway,
        # and a bounded one (ReLU6, Hardtanh) would saturate and zero every gradient.
        for name, layer in list(work.named_modules()):
            if isinstance(layer, _ACTIVATION_MODULES):
                parent, _, leaf = name.rpartition(".")
                setattr(work.get_submodule(parent) if parent else work, leaf, nn.Identity())
        with torch.no_grad():
            for parameter in work.parameters():
                parameter.abs_()
        work.zero_grad(set_to_none=True)
        work(torch.ones(1, *structure.input_shape, dtype=torch.float64)).sum().backward()
        # The products grow with depth: rescale in float64, then score in float32 like the other criteria.
        largest = max(float(p.grad.abs().max()) for p in work.parameters() if p.grad is not None) or 1.0
        for parameter in work.parameters():
            if parameter.grad is not None:
                parameter.grad.div_(largest)
        work.float()
        return _importance(work, structure, "synflow")


def score_drawn(
    criterion: str,
    module: nn.Module,
    structure: Structure,
    draw: Callable[[int], Batches | None],
    batches: int = 4,
) -> Scores:
    """Per-group channel scores of `module` by `criterion`; a data-driven one asks `draw(count)` for its
    calibration batches (a trainer's `calibration`: None when it lends no data)."""
    chosen = CRITERIA.get(criterion)()
    calibration: Batches = []
    if chosen.needs_data:
        drawn = draw(chosen.batches(batches))
        if drawn is None:
            free = ", ".join(name for name in CRITERIA if not CRITERIA.get(name).needs_data)
            raise EdgepruneError(
                f"criterion '{criterion}' needs data (--data)",
                hint=f"pruning with your own fine-tune and evaluation, choose a data-free criterion: {free}",
            )
        calibration = drawn
    scores = chosen.score(module, structure, calibration)
    return {name: torch.nan_to_num(value.float(), nan=0.0) for name, value in scores.items()}


def score(
    criterion: str,
    module: nn.Module,
    structure: Structure,
    data: Dataset | None = None,
    generator: torch.Generator | None = None,
    batches: int = 4,
    batch_size: int = 64,
) -> Scores:
    """`score_drawn` with calibration batches of `batch_size` drawn from `data`'s training split by `generator`."""

    def draw(count: int) -> Batches | None:
        if data is None or generator is None:
            return None
        return [data.sample(data.train, batch_size, generator) for _ in range(count)]

    return score_drawn(criterion, module, structure, draw, batches)
