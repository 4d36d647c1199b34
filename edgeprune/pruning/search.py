"""Meta-learning LeGR's per-group (alpha, kappa) with regularized (aging) evolution.

The population starts with the identity (alpha = 1, kappa = 0), the mean-normalised global ranking
(alpha = 1 / the group's mean score, Torch-Pruning's normaliser) and random members (alpha = exp(N(0, 1)),
kappa = N(0, std of the group's scores)). Each generation samples `sample_size` members, mutates the fittest
on a share of its groups (alpha's step size decays over the generations), scores the child and retires the
oldest member.

A candidate's score (lower is better) is the validation loss of the cut network after re-estimating its
BatchNorm statistics on a few calibration batches ("adaptive BN", EagleEye, ECCV 2020): removing channels
shifts every later layer's activations, and stale statistics judge a candidate by that mismatch rather than
by what it can still do (fitness "adaptive-bn", the default). `steps` > 0 adds that many Adam steps first.
Batches and validation images are drawn and prepared once for the whole search, so candidates are compared on
equal terms. The candidate is cut physically: at a budget well below the unpruned cost its forward passes cost a
fraction of a masked full-size network's, and a cut costs far less than the passes it saves.

Well below the unpruned cost this score misleads: on resnet20 at 22% of its MACs it ranked 12 random
candidates *against* their accuracy after a 3-epoch fine-tune (Spearman -0.85, bench/results/search-fitness.md),
because the old classifier reads the cut features as noise and the loss says how confidently it is wrong.
`fitness="probe"` scores by the loss of the classifier refit to the cut network's features instead (a few
L-BFGS iterations on `probe_samples` training images, pulled towards its old weights). It stays an option,
not the default: at 256 images it ranked the same candidates barely better than chance (+0.11), and searched
to the end it found less accurate networks after the fine-tune (resnet20, 3 seeds, 0.3x: -1.45 points,
bench/results/pruning-before-fill.md, `legr-probe`). Three Adam steps per candidate (`steps=3`, about 2.5x the cost)
rank those 12 candidates well (+0.87), but searched to the end they found no better networks either (-0.28 and
-0.77 points at 0.5x and 0.3x, `legr-steps3`, inside the seeds' spread), so the default stays at no steps.
`fitness="tau-steps"` (the cross-entropy after `tau` Adam steps, LeGR's own score) and `fitness="distill"` (the
KL divergence from the unpruned network's outputs after `tau` steps that minimise it) are the scores issue 31
asks to rank like fine-tuning at 0.5x and 0.3x on both models. On the converged resnet20 (93.3%), 8 candidates
against accuracy after 282 Adam steps (bench/results/search-fitness.md): at 50% of its MACs tau-steps (tau 20)
+0.90, distill +0.90, probe +0.79, adaptive-bn +0.67; at 30% tau-steps +0.64, distill +0.50, probe +0.74,
adaptive-bn -0.31. The default waits for mobilenetv2 and more candidates (edgeprune.pruning.fitness).

`finalists=K` re-judges the end of the search at a higher price: the population's two seeds (the identity and
the normalised ranking, which `global` prunes with) and the K best distinct candidates by the search's score are
each cut, fine-tuned `finalist_steps` Adam steps, BatchNorm-recalibrated and scored by their loss on
`finalist_samples` validation images; the lowest is the answer. A cheap score still picks hundreds of candidates
down to a few, and the answer can no longer be a network the cheap score liked and training does not, nor worse
than the plain rankings it started from, as far as a short fine-tune tells. Measured, it did not pay: on resnet20
(K = 4, 2 seeds, 0.5x and 0.3x of the measured latency) it chose the normalised seed in 3 of 4 searches, and the
networks came out 0.1-1.0 points below plain legr's after the common fine-tune in all 4 (bench/results/pruning.md,
`legr-final4`), so it is off by default.

All randomness comes from the one numpy Generator passed in (the finalists' batches from one of their own, see
`finalist_rows`); its state, the population, the history and the finalists' losses are checkpointed as JSON after
every evaluation, so an interrupted or time-boxed search continues where it stopped and reaches the same result as
an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from edgeprune import atomic
from edgeprune.data import Dataset
from edgeprune.errors import EdgepruneError
from edgeprune.pruning.budget import Budget
from edgeprune.pruning.fitness import describe
from edgeprune.pruning.groups import Structure
from edgeprune.pruning.ranking import Counts, Plan, group_means, rank
from edgeprune.pruning.search_settings import SearchSettings
from edgeprune.pruning.trainer import Trainer, as_trainer

LEARNED_FORMAT = "edgeprune-legr"
CHECKPOINT_FORMAT = "edgeprune-legr-search"


@dataclass
class Candidate:
    alpha: list[float]
    kappa: list[float]
    fitness: float
    born: int
    cost: float | None = None  # the budget's cost of the channels this candidate kept (for the report)


@dataclass
class Finalist:
    """A candidate re-judged at the end of the search: its search score and its loss after a short fine-tune."""

    born: int  # its index in the search's history
    fitness: float
    loss: float
    cost: float | None


@dataclass
class SearchResult:
    alpha: dict[str, float]
    kappa: dict[str, float]
    fitness: float
    identity_fitness: float
    evaluations: int
    seconds: float
    finished: bool
    history: list[float] = field(default_factory=list)
    costs: list[float | None] = field(default_factory=list)  # each candidate's cost in the budget's unit
    scored_by: str = "adaptive-bn"  # a FITNESSES name, or "metric" (the user's loop): what `fitness` is
    finalists: list[Finalist] = field(default_factory=list)  # the answer is the one of lowest loss, when any


class ChannelMasks:
    """Holds a plan's removed channels at zero: filters and biases of the group's layers, BN scale and shift.

    The search cuts its candidates instead (cheaper, see the module docstring); masks remain the independent
    check that a surgery computes what the masked network does (tests) and the benchmark's reference scorer."""

    def __init__(self, module: nn.Module, structure: Structure) -> None:
        self.structure = structure
        self.tensors: dict[str, list[tuple[torch.Tensor, str]]] = {}
        for name, group in structure.groups.items():
            self.tensors[name] = [
                (tensor, member)
                for member in (*group.layers, *group.norms)
                for tensor in (
                    getattr(module.get_submodule(member), "weight", None),
                    getattr(module.get_submodule(member), "bias", None),
                )
                if tensor is not None
            ]
        self.removed: dict[str, list[int]] = {}

    def set(self, keep: dict[str, list[int]], sizes: Counts) -> None:
        self.removed = {}
        for name, kept in keep.items():
            dropped = sorted(set(range(sizes[name])) - set(kept))
            if dropped:
                self.removed[name] = dropped
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for name, units in self.removed.items():
            group = self.structure.groups[name]
            for tensor, member in self.tensors[name]:
                tensor.index_fill_(0, torch.tensor(group.channels(member, units)), 0.0)


def _stds(scores: dict[str, torch.Tensor]) -> np.ndarray:
    values = []
    for tensor in scores.values():
        spread = float(tensor.double().std()) if tensor.numel() > 1 else 0.0
        values.append(spread if spread > 0 else max(float(tensor.double().abs().mean()), 1e-12))
    return np.array(values)


def seeds(scores: dict[str, torch.Tensor]) -> list[tuple[list[float], list[float]]]:
    """The population's first members: the identity (plain global ranking), then the mean-normalised global
    ranking, which a short search would otherwise have to find by chance. With scores already normalised
    the two coincide, and the second costs nothing (same channels, same cached score)."""
    layers = len(scores)
    normalised = [1.0 / mean for mean in group_means(scores).values()]
    return [([1.0] * layers, [0.0] * layers), (normalised, [0.0] * layers)]


class _Evolution:
    """The search state; every field is JSON-serialisable so the checkpoint is the state."""

    def __init__(self, scores: dict[str, torch.Tensor], settings: SearchSettings, rng: np.random.Generator) -> None:
        self.names, self.stds, self.settings, self.rng = list(scores), _stds(scores), settings, rng
        self.seeds = seeds(scores)[: settings.population]
        self.population: list[Candidate] = []
        self.history: list[Candidate] = []

    @property
    def total(self) -> int:
        return self.settings.population + self.settings.generations

    @property
    def done(self) -> bool:
        return len(self.history) >= self.total

    def propose(self) -> tuple[list[float], list[float]]:
        count, layers = len(self.history), len(self.names)
        if count < len(self.seeds):
            return self.seeds[count]
        if count < self.settings.population:
            alpha = np.exp(self.rng.normal(0.0, 1.0, layers))
            kappa = self.rng.normal(0.0, 1.0, layers) * self.stds
            return alpha.tolist(), kappa.tolist()
        sampled = self.rng.choice(len(self.population), size=self.settings.sample_size, replace=False)
        parent = min((self.population[int(i)] for i in sampled), key=lambda c: c.fitness)
        generation = count - self.settings.population
        sigma = self.settings.mutation_scale * max(0.1, 1.0 - generation / max(1, self.settings.generations))
        chosen = self.rng.choice(layers, size=max(1, round(self.settings.mutation_share * layers)), replace=False)
        alpha, kappa = np.array(parent.alpha), np.array(parent.kappa)
        alpha[chosen] *= np.exp(self.rng.normal(0.0, sigma, len(chosen)))
        kappa[chosen] += self.rng.normal(0.0, sigma, len(chosen)) * self.stds[chosen]
        return alpha.tolist(), kappa.tolist()

    def add(self, alpha: list[float], kappa: list[float], fitness: float, cost: float) -> None:
        child = Candidate(alpha, kappa, fitness, len(self.history), cost)
        self.history.append(child)
        self.population.append(child)
        if len(self.population) > self.settings.population:
            self.population.pop(0)  # aging: the oldest member retires, however fit

    def best(self) -> Candidate:
        return min(self.history, key=lambda c: c.fitness)

    def state(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "population": [c.born for c in self.population],
            "history": [asdict(c) for c in self.history],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.history = [Candidate(**c) for c in state["history"]]
        self.population = [self.history[i] for i in state["population"]]


Planner = Callable[..., Plan]  # (scores, budget, floor, alpha, kappa) -> the channels kept: rank, knapsack.select


def planner_name(planner: Planner) -> str:
    """How a checkpoint names the rule that turned candidates into plans."""
    return f"{planner.__module__}.{planner.__qualname__}"


def search_fingerprint(
    structure: Structure,
    budget: Budget,
    criterion: str,
    normalize: str,
    settings: SearchSettings,
    seed: int,
    planner: Planner = rank,
) -> dict:
    """What a checkpoint must match to be continued. The time box and the finalists do not change the evolution,
    so a search continues across changes to them (the finalists' losses are kept by how they were judged)."""
    tuning = {k: v for k, v in asdict(settings).items() if k != "minutes" and not k.startswith("finalist")}
    return {
        "groups": structure.signature(),
        "budget": [budget.kind, round(budget.target, 9)],
        "steps": budget.steps,  # the channel grid candidates are ranked on
        "criterion": criterion,
        "normalize": normalize,
        "planner": planner_name(planner),
        "settings": tuning,
        "seed": seed,
    }


def _load_checkpoint(path: Path | None, fingerprint: dict) -> dict | None:
    if path is None or not path.is_file():
        return None
    import json

    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != fingerprint:
        return None
    return state


def finalists(
    evolution: _Evolution, count: int, plan_of: Callable[[list[float], list[float]], Plan]
) -> list[tuple[Candidate, Plan]]:
    """The population's seeds (the identity and the normalised ranking, what `global` prunes with) and the
    `count` best candidates by the search's score, one per distinct set of kept channel counts, with their plans.
    Seeds that keep the same channels are one finalist."""
    seeded = evolution.history[: len(evolution.seeds)]
    ranked = sorted(evolution.history, key=lambda c: (c.fitness, c.born))
    chosen: dict[tuple[int, ...], tuple[Candidate, Plan]] = {}

    def add(candidate: Candidate) -> None:
        plan = plan_of(candidate.alpha, candidate.kappa)
        chosen.setdefault(tuple(plan.counts().values()), (candidate, plan))

    for candidate in seeded:
        add(candidate)
    wanted = len(chosen) + count
    for candidate in ranked:
        if len(chosen) >= wanted:
            break
        add(candidate)
    return list(chosen.values())


def search(
    module: nn.Module,
    structure: Structure,
    scores: dict[str, torch.Tensor],
    budget: Budget,
    floor: Counts,
    data: Dataset | Trainer,
    settings: SearchSettings,
    seed: int,
    criterion: str = "l2",
    checkpoint: Path | None = None,
    progress: Progress | None = None,
    normalize: str = "none",
    planner: Planner = rank,
) -> SearchResult:
    """Run (or continue) the evolution; returns the best (alpha, kappa) found within the time box.

    `data` scores the candidates (`Trainer.search_fitness`): a `Dataset` (edgeprune's own loop on it) as the
    module docstring says; a `UserLoop` cuts each for real, fine-tunes it with the user's code and scores it by
    minus the user's `evaluate` (lower is better here).
    `criterion` and `normalize` name how `scores` were made: a checkpoint continues only a search on the same.
    `planner` turns a candidate (alpha, kappa) into the channels it keeps, and must be the rule the method then
    prunes with (the global ranking for legr, the knapsack for legr-knapsack): the search scores, and so
    optimises, the plans that ship.
    The time box (`settings.minutes`) leaves out the time `budget` spends measuring the latency table's missing
    entries on the device (`Budget.profiling_seconds`): that is the table's work, kept for every later search.
    """
    settings.check()
    trainer = as_trainer(data)
    names = list(structure.groups)
    rng = np.random.default_rng(seed)
    evolution = _Evolution(scores, settings, rng)
    fingerprint = search_fingerprint(structure, budget, criterion, normalize, settings, seed, planner)
    saved = _load_checkpoint(checkpoint, fingerprint)
    resumed, spent = None, 0.0
    if saved is not None:
        evolution.restore(saved["evolution"])
        resumed = np.array(saved["train_index"], dtype=np.int64)
        spent = float(saved.get("seconds", 0.0))
    fitness = trainer.search_fitness(module, structure, settings, rng, resumed)
    score, train_index, scored_by = fitness.score, fitness.train_index, fitness.scored_by
    seen: dict[tuple[int, ...], float] = {}
    costs: dict[tuple[int, ...], float] = {}
    final_losses: dict[str, float] = dict(saved.get("finals", {})) if saved is not None else {}

    def plan_of(alpha: list[float], kappa: list[float]) -> Plan:
        alphas, kappas = dict(zip(names, alpha, strict=True)), dict(zip(names, kappa, strict=True))
        return planner(scores, budget, floor, alphas, kappas)

    def save() -> None:
        if checkpoint is not None:
            atomic.write_json(
                checkpoint,
                {
                    "format": CHECKPOINT_FORMAT,
                    "fingerprint": fingerprint,
                    "train_index": train_index.tolist(),
                    "seconds": spent + time.monotonic() - started,
                    "evolution": evolution.state(),
                    "finals": final_losses,
                },
            )

    fitness_name = describe(scored_by)
    resumed_at = len(evolution.history)
    started, profiled = time.monotonic(), budget.profiling_seconds
    task = progress.add_task("LeGR search", total=evolution.total) if progress is not None else None
    try:
        while not evolution.done:
            boxed = time.monotonic() - started - (budget.profiling_seconds - profiled)  # the table's work excluded
            if boxed >= settings.minutes * 60 and len(evolution.history) > resumed_at:
                break  # the time box is up; every run evaluates at least one candidate, so reruns progress
            alpha, kappa = evolution.propose()
            plan = plan_of(alpha, kappa)
            key = tuple(plan.counts().values())
            if key not in seen:  # other (alpha, kappa), same channels: same score, no need to train again
                seen[key] = score(plan.keep)
                costs[key] = budget.cost(plan.counts())
            fitness = seen[key]
            evolution.add(alpha, kappa, fitness if np.isfinite(fitness) else float("inf"), costs[key])
            save()
            if progress is not None and task is not None:
                best = evolution.best().fitness
                identity = evolution.history[0].fitness
                progress.update(
                    task,
                    completed=len(evolution.history),
                    description=f"LeGR search: best {fitness_name} {best:.4f} (identity {identity:.4f})",
                )
    finally:
        if progress is not None and task is not None:
            progress.remove_task(task)
    best, finals = evolution.best(), []
    judge = trainer.finalist_judge(module, structure, settings, seed) if settings.finalists else None
    if judge is not None:
        chosen = finalists(evolution, settings.finalists, plan_of)
        task = progress.add_task("LeGR finalists", total=len(chosen)) if progress is not None else None
        try:
            for candidate, plan in chosen:
                # a finalist's loss depends on how it was judged as well as on its channels
                judged_by = f"{settings.finalist_steps} steps, {settings.finalist_samples} images"
                key = f"{judged_by}: {','.join(str(count) for count in plan.counts().values())}"
                if key not in final_losses:
                    loss = judge(plan.keep)
                    final_losses[key] = loss if np.isfinite(loss) else float("inf")
                    save()
                finals.append(Finalist(candidate.born, candidate.fitness, final_losses[key], candidate.cost))
                if progress is not None and task is not None:
                    progress.update(
                        task, advance=1, description=f"LeGR finalists: fine-tuned val loss {final_losses[key]:.4f}"
                    )
        finally:
            if progress is not None and task is not None:
                progress.remove_task(task)
        best = evolution.history[min(finals, key=lambda f: f.loss).born]
    return SearchResult(
        alpha=dict(zip(names, best.alpha, strict=True)),
        kappa=dict(zip(names, best.kappa, strict=True)),
        fitness=best.fitness,
        identity_fitness=evolution.history[0].fitness,
        evaluations=len(evolution.history),
        seconds=spent + time.monotonic() - started,
        finished=evolution.done,
        history=[c.fitness for c in evolution.history],
        costs=[c.cost for c in evolution.history],
        scored_by=scored_by,
        finalists=finals,
    )


def save_learned(
    path: Path, result: SearchResult, structure: Structure, criterion: str, normalize: str, budget: Budget
) -> None:
    """The learned (alpha, kappa): reusable for any budget of the same model, criterion and normalisation."""
    atomic.write_json(
        path,
        {
            "format": LEARNED_FORMAT,
            "version": 1,
            "criterion": criterion,
            "normalize": normalize,
            "groups": [
                {"name": n, "size": g.size, "alpha": result.alpha[n], "kappa": result.kappa[n]}
                for n, g in structure.groups.items()
            ],
            "searched_for": {"kind": budget.kind, "target": budget.target},
            "fitness": result.fitness,
            "identity_fitness": result.identity_fitness,
            "evaluations": result.evaluations,
            "seconds": round(result.seconds, 2),
        },
    )


def _read_learned(path: Path) -> dict:
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise EdgepruneError(f"cannot read search file '{path}': {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != LEARNED_FORMAT:
        raise EdgepruneError(f"'{path}' is not an edgeprune LeGR search file")
    return data


def learned_mismatch(path: Path, structure: Structure, criterion: str, normalize: str = "none") -> str | None:
    """Why a learned file cannot serve this model, criterion and normalisation, or None when it can (alpha and
    kappa are affine maps of one scale of scores: on another they mean something else)."""
    try:
        data = _read_learned(path)
    except EdgepruneError as error:
        return error.message
    if [[g.get("name"), g.get("size")] for g in data.get("groups", [])] != structure.signature():
        return "it was learned for a different model (its channel groups do not match this one)"
    if data.get("criterion") != criterion:
        return f"it was learned with criterion '{data.get('criterion')}', not '{criterion}'"
    if data.get("normalize", "none") != normalize:  # files from before the option ranked raw scores
        return f"it was learned on scores normalised '{data.get('normalize', 'none')}', not '{normalize}'"
    return None


def load_learned(
    path: Path, structure: Structure, criterion: str, normalize: str = "none"
) -> tuple[dict[str, float], dict[str, float]]:
    """(alpha, kappa) from a learned file; refuses a file learned for another model, criterion or scale."""
    data = _read_learned(path)
    problem = learned_mismatch(path, structure, criterion, normalize)
    if problem is not None:
        raise EdgepruneError(
            f"cannot reuse '{path}': {problem}",
            hint="reuse a search only for the model, criterion and --normalize it was learned with, "
            "or drop --reuse-search",
        )
    groups = data["groups"]
    return {g["name"]: float(g["alpha"]) for g in groups}, {g["name"]: float(g["kappa"]) for g in groups}
