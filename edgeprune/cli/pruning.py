"""`edgeprune train` and `edgeprune prune`: baselines on real data and pruning to a budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeprune import search_defaults, training_defaults
from edgeprune.cli.common import (
    JsonOpt,
    MinKeepOpt,
    ModelArg,
    ShapeOpt,
    WidthOpt,
    check_output,
    console,
    emit,
    options,
    set_threads,
)
from edgeprune.errors import EdgepruneError

app = typer.Typer()

OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Where to write the model (.pt).")]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Data set: digits, fashion-mnist, cifar10:DIR or imagefolder:DIR (default: the one a saved model was "
        "trained on).",
    ),
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Folder of the fashion-mnist IDX files (default: Debian's).")
]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Seed of every random choice (data split, initial weights, prune's search).")
]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Use at most N training images (quick runs).")]
# The pruning options `run` and `sweep` share with `prune`.
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="legr, global, uniform, iap, aiap, pai, or legr-knapsack (LeGR's learned scores, channels chosen by "
        "importance per ms, FLOP or parameter saved; unmeasured against legr yet).",
    ),
]
PopulationOpt = Annotated[int, typer.Option("--population", help="LeGR: evolution population.")]
GenerationsOpt = Annotated[int, typer.Option("--generations", help="LeGR: evolution generations after the first.")]
SearchMinutesOpt = Annotated[float, typer.Option("--search-minutes", help="LeGR: time box of the search.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Training batch size.")]
LrOpt = Annotated[
    float | None,
    typer.Option(
        "--lr", help="Peak learning rate (default: the recipe's: 0.05 for sgd, 1e-3 for adam, pruning's fine-tune)."
    ),
]
ThreadsOpt = Annotated[
    int, typer.Option("--threads", help="Torch CPU threads; 1 is fastest on a shared small machine.")
]


# FLOPs and params budgets: a count, a percentage, or a fraction (below 1) of the original
TargetFlopsOpt = Annotated[
    str | None,
    typer.Option("--target-flops", help="FLOPs (MACs) budget: 1.5M, 300k, 50% or 0.5 (below 1: a fraction)."),
]
TargetParamsOpt = Annotated[
    str | None, typer.Option("--target-params", help="Parameter budget: 20k, 50% or 0.5 (below 1: a fraction).")
]


def data_options(data: DataOpt = None, data_dir: DataDirOpt = None, limit: LimitOpt = None) -> dict[str, Any]:
    """The data set `train` and `prune` run on, as ep.train's and ep.prune's keywords."""
    return {"data": data, "data_dir": data_dir, "limit": limit}


def fit_options(batch_size: BatchSizeOpt = 64, lr: LrOpt = None) -> dict[str, Any]:
    """How `train` and `prune` fit a model, as ep.train's and ep.prune's keywords."""
    return {"batch_size": batch_size, "lr": lr}


def _shown(progress: Any) -> dict[str, Any]:
    """What ep.train and ep.prune report as they go, drawn here: bars in `progress`, each step a line."""
    return {"progress": progress, "on_stage": lambda text: console.print(text, highlight=False)}


def _progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


@app.command("train")
@options("source", data_options)
@options("fit", fit_options)
def train_cmd(
    model: ModelArg,
    output: OutputOpt,
    source: dict[str, Any],
    fit: dict[str, Any],
    input_shape: ShapeOpt = None,
    classes: Annotated[int | None, typer.Option("--classes", help="Class count (default: the data set's).")] = None,
    width: WidthOpt = 1.0,
    epochs: Annotated[
        int,
        typer.Option(
            "--epochs",
            help="Training epochs. 12 with sgd and augmentation took resnet20 to 93.31% on Fashion-MNIST "
            "(bench/results/pruning-baselines.md).",
        ),
    ] = training_defaults.EPOCHS,
    recipe: Annotated[
        str,
        typer.Option(
            "--recipe",
            help="sgd: Nesterov SGD, weight decay 5e-4, warm-up + cosine; adam: Adam + cosine (the first recipe: "
            "resnet20 87.52% on Fashion-MNIST, though in 10 epochs on 6,000 images, not the whole split).",
        ),
    ] = training_defaults.RECIPE,
    label_smoothing: Annotated[
        float | None, typer.Option("--label-smoothing", help="Label smoothing of the loss, in [0, 1) (default 0).")
    ] = None,
    augment: Annotated[
        bool,
        typer.Option(
            "--augment/--no-augment",
            help="Random crops, and flips where the data set allows (fashion-mnist, cifar10; not digits), with any "
            "recipe. On by default: the run that reached 93.31% used it. --no-augment for short runs, where it cost "
            "accuracy (lenet5, 10 epochs on 4,000 Fashion-MNIST images: 80.7% with it, 85.8% without; "
            "bench/results/train-recipe.md).",
        ),
    ] = training_defaults.AUGMENT,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    json_out: JsonOpt = False,
) -> None:
    """Train a baseline model on an offline data set (digits, fashion-mnist, cifar10:DIR, imagefolder:DIR)."""
    import edgeprune as ep

    check_output(output)
    set_threads(threads)
    with _progress() as progress:
        result = ep.train(
            model,
            output,
            **source,
            input_shape=input_shape,
            classes=classes,
            width=width,
            epochs=epochs,
            recipe=recipe,
            label_smoothing=label_smoothing,
            augment=augment,
            seed=seed,
            **fit,
            **_shown(progress),
        )
    how = training_defaults.variant_name(recipe, augment)
    saved = f"[green]saved[/] {output}: test accuracy {result['accuracy']:.2%} after {epochs} epochs of {how} "
    emit(result, json_out, lambda: [saved + f"({result['seconds']:.1f} s)"])


def _budget(target_ms: str | None, target_flops: str | None, target_params: str | None) -> dict[str, str]:
    """The one budget flag given, as ep.prune's keyword (which parses it)."""
    given = {k: v for k, v in (("ms", target_ms), ("flops", target_flops), ("params", target_params)) if v}
    if len(given) != 1:
        raise EdgepruneError(
            "give exactly one budget: --target-ms, --target-flops or --target-params",
            hint="e.g. --target-ms 5 --device local, or --target-flops 50%",
        )
    return {f"target_{kind}": value for kind, value in given.items()}


def _lines(summary: dict[str, Any]) -> list[Any]:
    """Channels per layer before and after, then the costs, the accuracy and the search, and where it went."""
    from rich.table import Table

    from edgeprune.pruning.fitness import describe
    from edgeprune.targets import format_cost

    table = Table(title="channels per layer", title_justify="left")
    for column in ("layer", "before", "after"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for row in summary["layers"]:
        style = "dim" if row["before"] == row["after"] else None
        table.add_row(row["name"], str(row["before"]), str(row["after"]), style=style)
    lines = [
        ("FLOPs", f"{format_cost('flops', summary['original_flops'])} -> {format_cost('flops', summary['flops'])}"),
        (
            "params",
            f"{format_cost('params', summary['original_params'])} -> {format_cost('params', summary['params'])}",
        ),
        ("accuracy", f"{summary['accuracy_before']:.2%} -> {summary['accuracy_after']:.2%}"),
    ]
    if summary["predicted_ms"] is not None:
        lines.insert(0, ("predicted", f"{summary['original_predicted_ms']:.3f} ms -> {summary['predicted_ms']:.3f} ms"))
    if summary["search_evaluations"]:
        lines.append(
            (
                "search",
                f"{summary['search_evaluations']} candidates in {summary['search_seconds']:.1f} s, "
                f"{describe(summary.get('search_scored_by') or 'adaptive-bn')} "
                f"{summary['search_fitness']:.4f} (identity {summary['identity_fitness']:.4f})",
            )
        )
    if summary.get("search_finalists"):
        finalists = summary["search_finalists"]
        answer = min(finalists, key=lambda f: f["loss"])
        lines.append(
            (
                "finalists",
                f"{len(finalists)} re-judged after a short fine-tune; the answer is candidate {answer['born']} "
                f"(val loss {answer['loss']:.4f})",
            )
        )
    state = "unchanged (already within budget)" if summary["unchanged"] else "pruned"
    saved = f"[green]saved[/] {summary['output']} ({state}); summary in {summary['summary']}"
    return [table, *(f"  {label:<10} {text}" for label, text in lines), saved]


@app.command("prune")
@options("source", data_options)
@options("fit", fit_options)
def prune_cmd(
    model: Annotated[str, typer.Argument(help="A trained model file (or zoo name, e.g. for --method pai).")],
    output: OutputOpt,
    source: dict[str, Any],
    fit: dict[str, Any],
    target_ms: Annotated[str | None, typer.Option("--target-ms", help="Latency budget in ms (needs --device).")] = None,
    target_flops: TargetFlopsOpt = None,
    target_params: TargetParamsOpt = None,
    device: Annotated[
        str | None, typer.Option("--device", "-d", help="Device whose latency table predicts ms.")
    ] = None,
    input_shape: ShapeOpt = None,
    width: WidthOpt = 1.0,
    method: MethodOpt = "legr",
    criterion: Annotated[
        str | None,
        typer.Option("--criterion", help="l1, l2, taylor, bn, activation, snip, synflow (default per method)."),
    ] = None,
    finetune_epochs: Annotated[
        int | None, typer.Option("--finetune-epochs", help="Fine-tune epochs (default 5; pai trains 10).")
    ] = None,
    min_keep: MinKeepOpt = 0.1,
    normalize: Annotated[
        str | None,
        typer.Option(
            "--normalize",
            help="Per-layer score normalisation before ranking: none or mean (default per method: mean for "
            "global, none for legr, whose search learns the layers' scales, and the others).",
        ),
    ] = None,
    channel_step: Annotated[
        int | None,
        typer.Option(
            "--channel-step",
            help="Keep channel counts multiples of this (1: any count). Default: the latency table's grid for "
            "--target-ms (each prediction a measured point), any count otherwise.",
        ),
    ] = None,
    population: PopulationOpt = search_defaults.POPULATION,
    sample_size: Annotated[int, typer.Option("--sample-size", help="LeGR: members sampled per generation.")] = 8,
    generations: GenerationsOpt = search_defaults.GENERATIONS,
    mutation_share: Annotated[
        float, typer.Option("--mutation-share", help="LeGR: share of layers mutated per child.")
    ] = 0.2,
    mutation_scale: Annotated[
        float, typer.Option("--mutation-scale", help="LeGR: initial mutation step (decays).")
    ] = 1.0,
    search_steps: Annotated[
        int, typer.Option("--search-steps", help="LeGR: fine-tune steps per candidate before BN re-estimation.")
    ] = search_defaults.STEPS,
    fitness: Annotated[
        str,
        typer.Option(
            "--fitness",
            help="LeGR: how a candidate is scored: adaptive-bn (val loss after re-estimated BatchNorm), probe "
            "(classifier refit), tau-steps (val loss after --tau Adam steps), distill (KL from the unpruned "
            "net after --tau steps).",
        ),
    ] = "adaptive-bn",
    tau: Annotated[
        int, typer.Option("--tau", help="LeGR: training steps per candidate of tau-steps and distill.")
    ] = 20,
    finalists: Annotated[
        int,
        typer.Option(
            "--finalists",
            help="LeGR: after the search (outside its time box), re-judge its K best candidates and its seeds "
            "(the identity and the normalised ranking) after a short fine-tune of 50 Adam steps each; the lowest "
            "validation loss is the answer. 0: the search's best.",
        ),
    ] = search_defaults.FINALISTS,
    search_minutes: SearchMinutesOpt = 3.0,
    reuse_search: Annotated[
        Path | None, typer.Option("--reuse-search", help="LeGR: learned (alpha, kappa) file to reuse.")
    ] = None,
    new_search: Annotated[
        bool, typer.Option("--new-search", help="LeGR: ignore the learned file next to the output.")
    ] = False,
    rounds: Annotated[int, typer.Option("--rounds", help="iap / aiap: prune-and-fine-tune rounds.")] = 3,
    round_epochs: Annotated[int, typer.Option("--round-epochs", help="iap / aiap: epochs between rounds.")] = 1,
    steps: Annotated[
        int,
        typer.Option(
            "--steps",
            help="Prune in K steps toward the target (each step's target decaying exponentially from the "
            "unpruned cost), the --finetune-epochs split across them: 1 is one shot (the default until "
            "measured). legr searches once, at the final target. Not for iap / aiap (--rounds) or pai.",
        ),
    ] = 1,
    profile_missing: Annotated[
        bool, typer.Option("--profile-missing", help="Profile the model on the device if the LUT lacks entries.")
    ] = False,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    json_out: JsonOpt = False,
) -> None:
    """Prune a model to a latency (ms), FLOPs or params budget with LeGR or another method; fine-tune it."""
    from dataclasses import replace

    import edgeprune as ep
    from edgeprune.pruning import PruneSettings, SearchSettings, TrainSettings
    from edgeprune.pruning.methods import METHODS

    budget = _budget(target_ms, target_flops, target_params)
    if method not in METHODS:
        raise EdgepruneError(f"unknown --method '{method}'", hint=f"choose one of {', '.join(METHODS)}")
    check_output(output)
    set_threads(threads)
    epochs = METHODS.get(method).epochs if finetune_epochs is None else finetune_epochs
    # positional in the fields' order: the search's up to its batch size (the training's), then the pruning's
    search = SearchSettings(
        population, sample_size, generations, mutation_share, mutation_scale, search_steps, fit["batch_size"]
    )
    search = replace(search, fitness=fitness, tau=tau, finalists=finalists, minutes=search_minutes)
    train = TrainSettings.recipe_default("adam", epochs=epochs, **fit)  # pruning's fine-tune: the Adam recipe
    settings = PruneSettings(method, criterion, min_keep, train, search, rounds, round_epochs, seed=seed)
    settings = replace(settings, normalize=normalize, channel_step=channel_step, reuse_search=reuse_search, steps=steps)
    with _progress() as progress:
        _, result = ep.prune(
            model,
            **budget,
            device=ep.device(device) if device is not None else None,
            settings=settings,
            population=population,  # the common knob as the API's keyword (a tournament never exceeds it)
            **(source | {"data": source["data"] or True}),  # without --data: the data set the model was trained on
            input_shape=input_shape,
            width=width,
            output=output,
            new_search=new_search,
            profile_missing=profile_missing,
            **_shown(progress),
            on_note=lambda text: console.print(f"[yellow]note:[/] {text}", highlight=False),
        )
    summary = result.summary
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    emit(summary, json_out, lambda: _lines(summary))
    if not summary["within_budget"]:
        raise typer.Exit(1)
