"""LeGR search benchmark (issue #14): how fast a candidate is scored, and whether the cheap score ranks
candidates like the real thing.

Models as in tools/bench_pruning.py's full plan: resnet20 and mobilenetv2 (width 1.0) on Fashion-MNIST at its
native 28x28, 6,000 training images; the baselines are trained here for `--train-epochs` (cached in
bench/cache/baselines/ under bench_pruning's naming). Candidates are ranked to a FLOPs budget (`--flops`, a
share of the unpruned MACs): a latency budget would need the device's table, and what is measured here, the
scoring, does not depend on the budget's unit.

Three parts per model, each written to bench/results/search.json (or `--out`) as soon as it is done (a rerun
skips what is there, so an interrupted run resumes; a non-default `--threads` or `--flops` is its own entry):
- speed: the old scorer (the code at 15efe40: a masked full-size network, `--old-steps` Adam steps, BatchNorm
  statistics recomputed on those batches, loss on 512 validation images) and the search's two fitnesses (the
  cut network, BatchNorm re-estimated on cached calibration batches, no steps; "loss", the default, scores by
  the network's own classifier, "probe" by its classifier refit to the cut features), interleaved on the same
  candidates with the order turning; wall and CPU seconds per evaluation. On a loaded machine the wall time
  mostly measures the other processes; the CPU time is what one dedicated core would need.
- box: the real search (`edgeprune.pruning.search.search`, default settings) for `--minutes`: evaluations done.
- correlation: `--candidates` candidates (the identity, the mean-normalised ranking, then random members drawn
  as the search draws them), each scored by both fitnesses, by the cut network with stale BatchNorm statistics
  (what re-estimation buys), optionally by the old scorer, and by the real thing: `--finetune-steps` Adam steps
  on the cut network, then accuracy on the first `--test-images` test images. Spearman's rho between minus
  the score and that accuracy: 1 means the cheap score orders candidates exactly as fine-tuning does.

`--step-scorers 3 10` adds the loss fitness after 3 and after 10 Adam steps per candidate (the search's `steps`,
scorers "steps3", "steps10") to the speed and correlation parts. `--fitnesses tau-steps distill` adds the search's
registered fitness kinds (edgeprune.pruning.fitness.FITNESSES, scorers named "fitness:<kind>", training rows
drawn as the search draws them, `--tau` steps for the training kinds) to both parts. `--flops 0.5 0.3` measures
each share in turn (issue 31: every fitness at 0.5x and 0.3x on both models; a FLOPs share stands in for the
latency target here). `--recipe` is how the baselines are trained (default "sgd", edgeprune train's; cached
under a name of their own, "adam" under bench_pruning's old one). `--baseline pruning` scores candidates of
bench_pruning's converged baseline instead (issue 31: the fitness on the networks the benchmark prunes; its
fine-tune is 3 Adam epochs on 6,000 images, 282 steps):

    .venv/bin/python tools/bench_search.py --baseline pruning --parts correlation --flops 0.5 0.3 \
        --no-old-correlation --fitnesses adaptive-bn tau-steps distill --tau 20 --finetune-steps 282 \
        --out bench/results/search-fitness.json

`--finetune-epochs 3` fine-tunes each candidate as a bench_pruning row does (its `train` call, 3 Adam epochs with a
cosine schedule and weight decay, seeded as the row is) instead of `--finetune-steps` constant-rate steps, and
`--round-steps 20` adds the score by which bench_pruning's closed loop chooses among its rounds ("round20", minus
validation accuracy after 20 Adam steps on a copy): issue 31's fitness check against the benchmark's own fine-tune:

    .venv/bin/python tools/bench_search.py --models resnet20 --baseline pruning --parts correlation \
        --flops 0.3 0.5 --no-old-correlation --fitnesses tau-steps distill --tau 20 --round-steps 20 \
        --finetune-epochs 3 --test-images 10000 --candidates 12 --out bench/results/search-fitness.json

    .venv/bin/python tools/bench_search.py [--models resnet20 mobilenetv2] [--parts speed box correlation]
    .venv/bin/python tools/bench_search.py --parts correlation --flops 0.5 0.3 --no-old-correlation \
        --fitnesses adaptive-bn tau-steps distill --tau 20
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / "cache"
PARTS = ("speed", "box", "correlation")
Scorer = Callable[[dict[str, list[int]]], float]


@dataclass(frozen=True)
class Plan:
    data: str = "fashion-mnist"
    width: float = 1.0
    limit: int = 6000
    train_epochs: int = 2
    flops: float = 0.5
    pairs: int = 3  # interleaved old/new timing pairs
    minutes: float = 5.0  # the search's time box (the goal: >= 200 evaluations in 5 minutes)
    candidates: int = 10
    finetune_steps: int = 100
    test_images: int = 2000
    old_steps: int = 10  # the old scorer's tau, as bench_pruning's full plan ran it
    old_correlation: bool = True
    step_scorers: tuple[int, ...] = ()  # the loss fitness after this many Adam steps (`steps` in SearchSettings)
    fitnesses: tuple[str, ...] = ()  # FITNESSES kinds scored as the search scores them
    tau: int = 20  # their training steps (SearchSettings.tau)
    # the pruning benchmark's round score (bench_pruning.round_score) after this many Adam steps, as a scorer
    # "round<N>" (None: not scored)
    round_steps: int | None = None
    # 0: each candidate's fine-tune is `finetune_steps` Adam steps at a constant rate; N: the pruning benchmark's
    # own (`train` with TrainSettings(epochs=N), seeded as its rows are: cosine schedule, weight decay)
    finetune_epochs: int = 0
    recipe: str = "sgd"  # how the baseline is trained (edgeprune.pruning.finetune.RECIPES)
    # "own": trained here as the fields above say; "pruning": bench_pruning's converged baseline of its full plan
    # (`tools/bench_pruning.py --train-only`), the network its rows prune, on its data split
    baseline: str = "own"
    threads: int = 1
    seed: int = 0


def baseline(plan: Plan, model: str) -> tuple[Any, Any]:
    """The trained model (cached under bench_pruning's naming) and its data."""
    from edgeprune.models.io import load_saved, save_model
    from edgeprune.pruning import TrainSettings, train_bundle
    from edgeprune.pruning.inputs import model_and_data

    if plan.baseline == "pruning":
        from bench_pruning import BASELINE_SEED, FULL

        path = CACHE / "baselines" / f"{FULL.baseline_tag(model)}.pt"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run tools/bench_pruning.py --train-only --models {model} first")
        _, data = model_and_data(model, FULL.input_shape, FULL.data, None, FULL.width, BASELINE_SEED, None, FULL.limit)
        return load_saved(path), data
    bundle, data = model_and_data(model, None, plan.data, None, plan.width, plan.seed, None, plan.limit)
    tag = f"{plan.data}-native-{model}-w{plan.width}-l{plan.limit}-e{plan.train_epochs}-s{plan.seed}"
    tag += "" if plan.recipe == "adam" else f"-{plan.recipe}"  # adam: the recipe bench_pruning's names meant
    path = CACHE / "baselines" / f"{tag}.pt"
    if path.is_file():
        return load_saved(path), data
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = path.with_suffix(".checkpoint.pt")
    settings = TrainSettings.recipe_default(plan.recipe, epochs=plan.train_epochs)
    trained, _ = train_bundle(bundle, data, settings, plan.seed, None, checkpoint)
    save_model(trained, path)
    checkpoint.unlink(missing_ok=True)
    return trained, data


def old_scorer(module: Any, structure: Any, data: Any, steps: int, seed: int) -> Scorer:
    """The scorer as it was at 15efe40: masks on a full-size copy, `steps` Adam steps, statistics recomputed
    on those batches, loss on 512 validation images (kept here as the reference the new one is compared to)."""
    import torch

    from edgeprune.pruning.finetune import loss_on, recalibrate_batchnorm, train_steps
    from edgeprune.pruning.search import ChannelMasks

    rows = np.random.default_rng(seed).integers(0, len(data.train), size=(steps, 64))
    batches = [
        (data.prepare(data.train.images[torch.from_numpy(r)]), data.train.labels[torch.from_numpy(r)]) for r in rows
    ]
    val_inputs, val_labels = data.prepare(data.val.images[:512]), data.val.labels[:512]
    work = copy.deepcopy(module)
    original = {k: v.clone() for k, v in work.state_dict().items()}
    masks, sizes = ChannelMasks(work, structure), structure.sizes()

    def score(keep: dict[str, list[int]]) -> float:
        work.load_state_dict(original)
        masks.set(keep, sizes)
        train_steps(work, batches, 1e-3, after_step=masks.apply)
        recalibrate_batchnorm(work, batches)
        return loss_on(work, val_inputs, val_labels)

    return score


def new_scorer(module: Any, structure: Any, data: Any, seed: int, fitness: str = "loss", steps: int = 0) -> Scorer:
    """The search's own scorer with `fitness` ("probe": the classifier refit; "loss": adaptive BN only) after
    `steps` Adam steps, with training rows drawn as the search draws them."""
    from edgeprune.pruning.fitness import adaptive_bn_scorer, probe_layer, training_rows
    from edgeprune.pruning.search import SearchSettings

    settings = SearchSettings(steps=steps)  # the scorer reads the steps; `fitness` picks the probe below
    probe = probe_layer(module, structure) if fitness == "probe" else None
    rows = np.random.default_rng(seed).integers(
        0, len(data.train), size=(training_rows(settings, probe is not None), settings.batch_size)
    )
    return adaptive_bn_scorer(module, structure, data, settings, rows, probe)


def step_scorers(setup: Setup) -> dict[str, Scorer]:
    """The loss fitness after each of the plan's `step_scorers` Adam steps, named "steps<N>"."""
    return {
        f"steps{n}": new_scorer(setup.module, setup.structure, setup.data, setup.plan.seed, "loss", n)
        for n in setup.plan.step_scorers
    }


def kind_scorers(setup: Setup) -> dict[str, Scorer]:
    """The plan's `fitnesses`, each as the search scores with it (its own training rows, drawn from the seed as
    the search draws them), named "fitness:<kind>"."""
    from edgeprune.pruning.fitness import FITNESSES
    from edgeprune.pruning.search import SearchSettings

    plan, scorers = setup.plan, {}
    for name in plan.fitnesses:
        kind, settings = FITNESSES.get(name)(), SearchSettings(fitness=name, tau=plan.tau)
        count = kind.rows(setup.module, setup.structure, settings)
        rows = np.random.default_rng(plan.seed).integers(0, len(setup.data.train), size=(count, settings.batch_size))
        scorers[f"fitness:{name}"], _ = kind.scorer(setup.module, setup.structure, setup.data, settings, rows)
    return scorers


def round_scorer(setup: Setup, steps: int) -> Scorer:
    """Minus the validation accuracy by which the pruning benchmark's closed loop chooses among its rounds (its
    `round_score`: Adam steps on a copy, BatchNorm re-estimated on its calibration images), on the same batches a
    row of this seed draws."""
    from bench_pruning import calibration_batches, round_score, score_batches

    from edgeprune.pruning.groups import prune

    data = setup.data
    batches, calibration = score_batches(data, steps, setup.plan.seed), calibration_batches(data)
    return lambda keep: -round_score(prune(setup.module, setup.structure, keep), data, batches, calibration)


def stale_scorer(module: Any, structure: Any, data: Any) -> Scorer:
    """The cut network with the unpruned network's BatchNorm statistics: what re-estimation is measured against."""
    from edgeprune.pruning.finetune import loss_on
    from edgeprune.pruning.groups import prune
    from edgeprune.pruning.search import SearchSettings

    count = SearchSettings().val_samples
    inputs, labels = data.prepare(data.val.images[:count]), data.val.labels[:count]
    return lambda keep: loss_on(prune(module, structure, keep), inputs, labels)


class Setup:
    """One model's trained baseline, channel groups, scores, budget and candidates."""

    def __init__(self, plan: Plan, model: str) -> None:
        from edgeprune.pruning import criteria, groups, ranking
        from edgeprune.pruning.budget import bind
        from edgeprune.pruning.search import seeds
        from edgeprune.targets import parse_target

        self.plan, self.model = plan, model
        self.bundle, self.data = baseline(plan, model)
        self.module = self.bundle.module.eval()
        self.structure = groups.analyze(self.module, self.bundle.input_shape)
        self.scores = criteria.score("l2", self.module, self.structure)
        self.budget = bind(parse_target("flops", f"{plan.flops * 100}%"), self.module, self.structure)
        self.floor = ranking.minimum_counts(self.structure.sizes(), self.budget.steps, 0.1)
        names = list(self.scores)
        rng = np.random.default_rng(plan.seed)
        stds = np.array([float(v.double().std()) for v in self.scores.values()])
        members = seeds(self.scores)  # then random members, drawn as the search draws them
        while len(members) < 4 * plan.candidates:
            members.append(
                (np.exp(rng.normal(0, 1, len(names))).tolist(), (rng.normal(0, 1, len(names)) * stds).tolist())
            )
        self.candidates: list[dict[str, list[int]]] = []
        seen: set[tuple[int, ...]] = set()
        for alpha, kappa in members:
            ranked = ranking.rank(
                self.scores,
                self.budget,
                self.floor,
                dict(zip(names, alpha, strict=True)),
                dict(zip(names, kappa, strict=True)),
            )
            key = tuple(ranked.counts().values())
            if key not in seen and len(self.candidates) < plan.candidates:
                seen.add(key)
                self.candidates.append(ranked.keep)


def timed(scorer: Scorer, keep: dict[str, list[int]]) -> tuple[float, float, float]:
    """(score, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = scorer(keep)
    return value, time.perf_counter() - wall, time.process_time() - cpu


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def speed(setup: Setup, say: Callable[[str], None]) -> dict[str, Any]:
    """The old scorer and the search's two fitnesses on the same candidates, interleaved, the order turning."""
    plan = setup.plan
    scorers = {
        "old": old_scorer(setup.module, setup.structure, setup.data, plan.old_steps, plan.seed),
        "loss": new_scorer(setup.module, setup.structure, setup.data, plan.seed, "loss"),
        "probe": new_scorer(setup.module, setup.structure, setup.data, plan.seed, "probe"),
        **step_scorers(setup),
        **kind_scorers(setup),
    }
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in scorers}
    names = list(scorers)
    for index in range(plan.pairs):
        keep = setup.candidates[index % len(setup.candidates)]
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            _, wall, cpu = timed(scorers[name], keep)
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
            say(f"  {setup.model} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU")
    result: dict[str, Any] = {}
    for name, measured in times.items():
        cpu = statistics.median(measured["cpu"])
        result[name] = {
            "wall_s": spread(measured["wall"]),
            "cpu_s": spread(measured["cpu"]),
            "per_5_min_wall": 300 / statistics.median(measured["wall"]),
            "per_5_min_one_core": 300 / cpu,
        }
    result["speedup_cpu"] = result["old"]["cpu_s"]["median"] / result["loss"]["cpu_s"]["median"]
    return result


def box(setup: Setup, say: Callable[[str], None]) -> dict[str, Any]:
    """The real search with its default settings, for the plan's time box."""
    from edgeprune.pruning.search import SearchSettings, search

    settings = SearchSettings(minutes=setup.plan.minutes)
    started = time.process_time()
    result = search(
        setup.module, setup.structure, setup.scores, setup.budget, setup.floor, setup.data, settings, setup.plan.seed
    )
    cpu = time.process_time() - started
    say(f"  {setup.model} search: {result.evaluations} evaluations in {result.seconds:.0f} s ({cpu:.0f} s CPU)")
    return {
        "settings": asdict(settings),
        "evaluations": result.evaluations,
        "distinct": len(set(result.history)),  # the rest had a scored candidate's channel counts: cached
        "seconds": result.seconds,
        "cpu_seconds": cpu,
        "fitness": result.fitness,
        "scored_by": result.scored_by,
        "identity_fitness": result.identity_fitness,
        "normalised_seed_fitness": result.history[1] if len(result.history) > 1 else None,
    }


def ranks(values: list[float]) -> np.ndarray:
    """Ranks with ties averaged (for Spearman's rho)."""
    array = np.asarray(values, dtype=float)
    order = np.argsort(array, kind="stable")
    result = np.empty(len(array))
    result[order] = np.arange(len(array), dtype=float)
    for value in np.unique(array):
        tied = array == value
        result[tied] = result[tied].mean()
    return result


def spearman(a: list[float], b: list[float]) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def correlation(setup: Setup, say: Callable[[str], None]) -> dict[str, Any]:
    """Cheap scores against accuracy after a short real fine-tune, candidate by candidate."""
    import torch

    from edgeprune.data import Split
    from edgeprune.pruning.finetune import TrainSettings, evaluate, train, train_steps
    from edgeprune.pruning.groups import prune

    plan, data = setup.plan, setup.data
    scorers = {
        "probe": new_scorer(setup.module, setup.structure, data, plan.seed, "probe"),
        "loss": new_scorer(setup.module, setup.structure, data, plan.seed, "loss"),
        "stale_bn": stale_scorer(setup.module, setup.structure, data),
        **step_scorers(setup),
        **kind_scorers(setup),
    }
    if plan.round_steps is not None:
        scorers[f"round{plan.round_steps}"] = round_scorer(setup, plan.round_steps)
    if plan.old_correlation:
        scorers["old"] = old_scorer(setup.module, setup.structure, data, plan.old_steps, plan.seed)
    generator = torch.Generator().manual_seed(plan.seed + 1)
    batches = [data.sample(data.train, 64, generator) for _ in range(plan.finetune_steps)]
    test = Split(data.test.images[: plan.test_images], data.test.labels[: plan.test_images])
    records = []
    for index, keep in enumerate(setup.candidates):
        record: dict[str, Any] = {"counts": [len(k) for k in keep.values()]}
        for name, scorer in scorers.items():
            record[name] = scorer(keep)
        candidate = prune(setup.module, setup.structure, keep)
        if plan.finetune_epochs:  # the pruning benchmark's fine-tune, seeded as its rows are
            train(candidate, data, TrainSettings(epochs=plan.finetune_epochs), torch.Generator().manual_seed(plan.seed))
        else:
            train_steps(candidate, batches, 1e-3)
        record["accuracy"] = evaluate(candidate, data, test)[1]
        records.append(record)
        say(
            f"  {setup.model} candidate {index + 1}/{len(setup.candidates)}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "counts")
        )
    accuracy = [r["accuracy"] for r in records]
    rho = {name: spearman([-r[name] for r in records], accuracy) for name in scorers}
    finetune = (
        f"the pruning benchmark's fine-tune ({plan.finetune_epochs} Adam epochs, cosine, on {len(data.train)} images)"
        if plan.finetune_epochs
        else f"{plan.finetune_steps} Adam steps"
    )
    return {"candidates": records, "spearman": rho, "finetune_steps": plan.finetune_steps, "finetune": finetune}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# LeGR search: candidate scoring (tools/bench_search.py)",
        "",
        "Old scorer: masked full-size network, Adam steps, BN statistics from those batches, 512 validation images "
        "(the code at 15efe40). New (`new` in entries measured before the probe, `loss` since): the cut network, BN "
        "statistics re-estimated on cached calibration batches, no steps, 256 validation images. `probe`: the same, "
        "then the classifier refit to the cut features on 256 training images (an option of the search). "
        "`steps<N>`: `loss` after N Adam steps on the cut network (the search's `steps`). "
        "`fitness:<kind>`: the search's fitness of that kind (tau-steps: `loss` after `tau` Adam steps; distill: KL "
        "from the unpruned network's outputs after `tau` steps towards them). `round<N>`: the pruning benchmark's "
        "round score (validation accuracy after N Adam steps on a copy, BatchNorm re-estimated on 2048 images). "
        "Median (min-max) seconds per evaluation, interleaved on the same candidates.",
        "",
        "Measured on a shared machine under other work (load averages below): wall times are inflated by it, CPU "
        "seconds of the benchmark's own process much less so. Torch at one thread unless a heading says otherwise.",
        "",
    ]
    for model, result in results.items():
        plan = result["plan"]
        trained = (
            f"bench_pruning's converged baseline, test accuracy {result.get('baseline_accuracy', float('nan')):.2%}"
            if plan.get("baseline") == "pruning"
            else f"baseline trained {plan['train_epochs']} epoch(s) on {plan['limit']} images, "
            f"{plan.get('recipe', 'adam')} recipe"
        )
        lines += [
            f"## {model} ({plan['data']} 28x28, width {plan['width']}, {plan['flops']:.0%} FLOPs budget, {trained})",
            "",
        ]
        loads = ", ".join(f"{part} {result[part]['load']}" for part in PARTS if part in result)
        lines += [f"Load average (1 min) at start-end of each part, {os.cpu_count()} shared cores: {loads}.", ""]
        if "speed" in result:
            lines += [
                "| scorer | wall s / eval | CPU s / eval | evals in 5 min (wall, loaded) | evals in 5 min (one core) |",
                "|---|---|---|---|---|",
            ]
            for name in [k for k in result["speed"] if k not in ("speedup_cpu", "load")]:
                s = result["speed"][name]
                lines.append(
                    f"| {name} | {s['wall_s']['median']:.2f} ({s['wall_s']['min']:.2f}-{s['wall_s']['max']:.2f}) | "
                    f"{s['cpu_s']['median']:.2f} ({s['cpu_s']['min']:.2f}-{s['cpu_s']['max']:.2f}) | "
                    f"{s['per_5_min_wall']:.0f} | {s['per_5_min_one_core']:.0f} |"
                )
            lines += [
                "",
                f"CPU speed-up of the default scorer over the old: {result['speed']['speedup_cpu']:.1f}x.",
                "",
            ]
        if "box" in result:
            b = result["box"]
            lines += [
                f"Real search, {b['settings']['minutes']:g}-minute box: **{b['evaluations']} evaluations** "
                f"({b.get('distinct', '?')} distinct channel counts scored, the others cached) in "
                f"{b['seconds']:.0f} s wall ({b['cpu_seconds']:.0f} s CPU); best {b.get('scored_by', 'loss')} fitness "
                f"{b['fitness']:.4f}, "
                f"identity {b['identity_fitness']:.4f}, normalised seed {b['normalised_seed_fitness']:.4f}.",
                "",
            ]
        if "correlation" in result:
            c = result["correlation"]
            rho = ", ".join(f"{k} {v:+.2f}" for k, v in c["spearman"].items())
            finetune = c.get("finetune", f"{c['finetune_steps']} Adam steps")  # entries from before it was kept
            first = c["candidates"][:2]
            lines += [
                f"Ranking quality on {len(c['candidates'])} candidates, against test accuracy (first "
                f"{plan['test_images']} test images) after {finetune}: "
                f"Spearman rho {rho}.",
                f"Identity {first[0]['accuracy']:.2%}, mean-normalised ranking {first[1]['accuracy']:.2%} after "
                "that fine-tune (one seed: a hint, not a verdict).",
                "",
            ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2"])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    for field in (
        "train_epochs",
        "pairs",
        "candidates",
        "finetune_steps",
        "finetune_epochs",
        "test_images",
        "old_steps",
        "threads",
    ):
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, default=getattr(Plan, field))
    parser.add_argument("--minutes", type=float, default=Plan.minutes)
    parser.add_argument("--flops", type=float, nargs="+", default=[Plan.flops], help="FLOPs shares, each in turn")
    parser.add_argument("--fitnesses", nargs="*", default=[], help="also score by these search fitness kinds")
    parser.add_argument("--tau", type=int, default=Plan.tau, help="training steps of tau-steps and distill")
    parser.add_argument(
        "--round-steps", type=int, help="also score by the pruning benchmark's round score after N Adam steps"
    )
    parser.add_argument("--recipe", default=Plan.recipe, help="how the baselines are trained (sgd, adam)")
    parser.add_argument(
        "--baseline",
        choices=("own", "pruning"),
        default=Plan.baseline,
        help="own: trained here (--train-epochs, --recipe); pruning: bench_pruning's converged baseline",
    )
    parser.add_argument(
        "--step-scorers", nargs="*", type=int, default=[], help="also score by the loss fitness after N Adam steps"
    )
    parser.add_argument("--no-old-correlation", action="store_true", help="skip the old scorer in the correlation")
    parser.add_argument("--out", type=Path, default=RESULTS / "search.json")
    args = parser.parse_args()
    import torch

    plans = [
        Plan(
            train_epochs=args.train_epochs,
            flops=flops,
            pairs=args.pairs,
            minutes=args.minutes,
            candidates=args.candidates,
            finetune_steps=args.finetune_steps,
            test_images=args.test_images,
            old_steps=args.old_steps,
            old_correlation=not args.no_old_correlation,
            step_scorers=tuple(args.step_scorers),
            fitnesses=tuple(args.fitnesses),
            tau=args.tau,
            round_steps=args.round_steps,
            finetune_epochs=args.finetune_epochs,
            recipe=args.recipe,
            threads=args.threads,
            baseline=args.baseline,
        )
        for flops in args.flops
    ]
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for plan in plans:
        for model in args.models:
            measure(plan, model, args.parts, results, args.out)


def measure(plan: Plan, model: str, parts: list[str], results: dict[str, Any], out: Path) -> None:
    """The plan's `parts` for one model, each written to `out` (and its .md) as soon as it is done."""
    from edgeprune import atomic

    setup = Setup(plan, model)
    key = model + (f", {plan.threads} threads" if plan.threads != 1 else "")
    key += f", {plan.flops:.0%} FLOPs" if plan.flops != Plan.flops else ""
    key += f", {plan.recipe} baseline" if plan.recipe != "adam" and plan.baseline == "own" else ""
    key += ", converged baseline" if plan.baseline == "pruning" else ""
    key += ", benchmark fine-tune" if plan.finetune_epochs else ""
    if key not in results:  # a new entry reads first: the file is newest first from here on
        earlier = dict(results)
        results.clear()
        results[key] = {}
        results.update(earlier)
    entry = results[key]
    conditions = json.loads(json.dumps(asdict(plan)))  # as the file holds them (tuples become lists)
    for part in parts:
        if part in entry and entry.get("plan") == conditions:
            continue
        if entry.get("plan") != conditions:  # other conditions: start this model's entry again
            entry.clear()
        entry["plan"] = conditions
        entry["baseline_accuracy"] = setup.bundle.meta.get("accuracy")
        before = os.getloadavg()[0]
        print(f"{model}: {part}", flush=True)
        run = {"speed": speed, "box": box, "correlation": correlation}[part]
        entry[part] = run(setup, lambda text: print(text, flush=True))
        entry[part]["load"] = f"{before:.1f}-{os.getloadavg()[0]:.1f}"
        atomic.write_json(out, results)
        atomic.write_text(out.with_suffix(".md"), markdown(results))


if __name__ == "__main__":
    main()
