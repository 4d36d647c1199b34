"""`ep.prune`: one model to one budget, fine-tuned by the user's own loop or by edgeprune's on a data set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.api.models import Shape, bundle, image_shape, parse_shape
from edgeprune.api.training import sidecar
from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    import torch
    from rich.progress import Progress
    from torch import nn

    from edgeprune.devices.base import Device
    from edgeprune.models.io import ModelBundle
    from edgeprune.pruning.budget import LatencyPredictor
    from edgeprune.pruning.methods import PruneSettings
    from edgeprune.pruning.trainer import Evaluator, Finetuner
    from edgeprune.targets import Target


@dataclass
class PruneResult:
    """How pruning went (`edgeprune prune`'s summary): costs before and after, the user's metric if given."""

    target: str
    method: str
    within_budget: bool
    unchanged: bool
    flops: int
    params: int
    original_flops: int
    original_params: int
    predicted_ms: float | None  # on the device, when a device was given
    original_predicted_ms: float | None
    metric_before: float | None  # the user's evaluate(model), or the test accuracy with data=
    metric_after: float | None
    search_evaluations: int
    layers: list[dict[str, Any]] = field(default_factory=list)  # output channels per layer, before and after
    notes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # with data=: all `edgeprune prune --json` prints


def _target(
    target_ms: float | str | None, target_flops: float | str | None, target_params: float | str | None
) -> Target:
    from edgeprune.targets import parse_target

    given = {k: v for k, v in (("ms", target_ms), ("flops", target_flops), ("params", target_params)) if v is not None}
    if len(given) != 1:
        raise EdgepruneError(
            "give exactly one target: target_ms, target_flops or target_params",
            hint="e.g. target_flops='50%' (of the original) or target_ms=2.5 with a device",
        )
    ((kind, value),) = given.items()
    return parse_target(kind, value)


@dataclass(frozen=True)
class _Says:
    """Where ep.prune reports what it decides on the way (the CLI prints these; a library caller may not care)."""

    stage: Callable[[str], None]
    note: Callable[[str], None]


def _predictor(
    device: Device | None, target: Target, net: ModelBundle, profile_missing: bool, model: Any, says: _Says
) -> LatencyPredictor | None:
    """The device's latency model: required for a millisecond target, else only for reporting milliseconds (a
    table that cannot predict this model is then a note, not a failure)."""
    from edgeprune.pruning.budget import LatencyPredictor

    if device is None:
        return None
    named = model if isinstance(model, str) else None  # how a hint names the model to profile
    if target.kind == "ms":
        return LatencyPredictor(device, net, profile_missing, named)
    try:
        predictor = LatencyPredictor(device, net, profile_missing, named)
        predictor.predict_ms(net.module, net.input_shape)
        return predictor
    except EdgepruneError as error:
        says.note(f"no latency prediction: {error.message}")
        return None


def _learned_search(
    settings: PruneSettings, net: ModelBundle, output: Path | None, new_search: bool, says: _Says
) -> Path | None:
    """The learned (alpha, kappa) to reuse: the one given, else the file a previous LeGR search for the same
    `output` left beside it (one search, many budgets) when it fits this model."""
    from edgeprune.pruning.groups import analyze
    from edgeprune.pruning.search import learned_mismatch

    if settings.reuse_search is not None:
        if not settings.reuse_search.is_file():
            raise EdgepruneError(f"--reuse-search file '{settings.reuse_search}' not found")
        return settings.reuse_search
    if not settings.method_class.searches or new_search or output is None:
        return None
    learned = sidecar(output, ".legr.json")
    if not learned.is_file():
        return None
    structure = analyze(net.module, net.input_shape)
    problem = learned_mismatch(learned, structure, settings.criterion_name, settings.normalizer)
    if problem is not None:
        says.note(f"not reusing {learned}: {problem}")
        return None
    says.stage(f"reusing the learned (alpha, kappa) in {learned} (--new-search to search again)")
    return learned


def _with_data(
    model: nn.Module | str,
    example_input: torch.Tensor | None,
    data: str | bool,
    shape: tuple[int, int, int] | None,
    width: float,
    seed: int,
    data_dir: Path | None,
    limit: int | None,
) -> tuple[ModelBundle, Any]:
    """The model and the data set edgeprune's own loop fine-tunes and evaluates on (`data=True`: the one a
    saved model records)."""
    from edgeprune.data import load_dataset
    from edgeprune.pruning.inputs import model_and_data

    spec = data if isinstance(data, str) else None
    if isinstance(model, str):
        if example_input is not None:
            shape = image_shape(example_input)
        return model_and_data(model, shape, spec, None, width, seed, data_dir, limit)
    if spec is None:
        raise EdgepruneError("data=True names the data set a saved model records; a module records none")
    net = bundle(model, example_input)
    return net, load_dataset(spec, net.input_shape, seed, data_dir, limit)


def _settings(
    settings: PruneSettings | None, conveniences: dict[str, Any], fit: dict[str, Any], search: dict[str, Any]
) -> PruneSettings:
    """`settings` (default: PruneSettings' own, trained for the method's epochs) with the keyword conveniences
    that were given (not None) set on top: `conveniences` on the settings, `fit` on its training, `search` on
    its search (whose batches are the training's)."""
    from dataclasses import replace

    from edgeprune.pruning.methods import METHODS, PruneSettings

    def given(values: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in values.items() if value is not None}

    base = replace(settings or PruneSettings(), **given(conveniences))
    train = base.finetune if settings is not None else replace(base.finetune, epochs=METHODS.get(base.method).epochs)
    train = replace(train, **given(fit))
    train.check()
    tuned = replace(base.search, **given(search), batch_size=train.batch_size)
    population_given = search.get("population") is not None
    if settings is None or population_given:  # the tournament: its default size, or a smaller population's all
        tuned = replace(tuned, sample_size=min(tuned.sample_size, tuned.population))
    return replace(base, finetune=train, search=tuned)


def prune(
    model: nn.Module | str,
    example_input: torch.Tensor | None = None,
    *,
    target_ms: float | str | None = None,
    target_flops: float | str | None = None,
    target_params: float | str | None = None,
    device: Device | None = None,
    settings: PruneSettings | None = None,
    method: str | None = None,
    criterion: str | None = None,
    finetune: Finetuner | None = None,
    evaluate: Evaluator | None = None,
    epochs: int | None = None,
    search_epochs: int = 1,
    search_minutes: float | None = None,
    population: int | None = None,
    generations: int | None = None,
    min_keep: float | None = None,
    steps: int | None = None,
    seed: int | None = None,
    input_shape: Shape | None = None,
    width: float = 1.0,
    data: str | bool | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    output: str | Path | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    new_search: bool = False,
    profile_missing: bool = True,
    progress: Progress | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> tuple[nn.Module, PruneResult]:
    """Prune to one budget (`edgeprune prune`); returns a physically smaller module (an fx GraphModule; the
    input model is left as it was) and the result.

    `settings` (a `edgeprune.pruning.PruneSettings`, with its `TrainSettings` and `SearchSettings`) holds every
    knob of pruning; the keywords `method`, `criterion`, `epochs`, `min_keep`, `steps`, `seed`, `batch_size`,
    `lr`, `population`, `generations` and `search_minutes` are conveniences for the common ones, set on top of it
    (left out: the settings' values, or PruneSettings' defaults with 5 epochs, 10 for 'pai'). `steps` K > 1
    prunes in K steps under an exponentially decaying target, the `epochs` split across them (one shot, 1, is
    the default until measured); 'legr-knapsack' chooses channels by importance per unit of cost saved.

    With the user's own training code, `finetune(model, epochs)` trains a model in place and
    `evaluate(model) -> float` scores it (higher is better): the pruned model gets `epochs` of fine-tuning, and
    each LeGR search candidate is cut, fine-tuned `search_epochs` and scored (the search runs
    `population + generations` candidates, `search_minutes` at most). Without `finetune` the pruned model is not
    fine-tuned; methods other than 'legr' need no `evaluate`; only data-free criteria apply (l1, l2, bn,
    synflow).

    With `data` (a data set spec: digits, fashion-mnist, cifar10:DIR, imagefolder:DIR; or True for the one a
    saved model records), edgeprune's own loop does that on the data set instead, as `edgeprune prune --data`
    does, with `batch_size`, `lr`, the search's steps per candidate and finalists (its K best and its seeds
    re-judged after a short fine-tune) and every criterion; `output` then saves the pruned model with its summary
    (`<stem>.json`), its learned search (`<stem>.legr.json`, reused by the next budget unless `new_search`) and
    resumable checkpoints.

    `target_ms` needs a `device` (its latency table, measured where it lacks entries when `profile_missing`;
    other targets use a given device only to report milliseconds); FLOPs and parameter targets take a number or
    a share of the original ('50%', or a number below 1: 0.5 is half). A criterion or normalisation of None is
    the method's default (scores normalised by their layer's mean for 'global', raw for the others). Kept
    channel counts sit on the latency table's grid for a `target_ms` (each prediction a measured point) unless
    the settings' `channel_step` sets a step of its own (1: any count, predicted by interpolating the table).
    `on_stage(text)` and `on_note(text)` say what it does and what it noticed; `progress` (a rich Progress)
    draws its training and search bars.
    """
    target = _target(target_ms, target_flops, target_params)
    if target.kind == "ms" and device is None:
        raise EdgepruneError(
            "--target-ms needs --device (the latency table to predict with)",
            hint="from Python: target_ms needs a device, pass device=ep.device(...)",
        )
    own_loop = data is not None and data is not False
    if own_loop and (finetune is not None or evaluate is not None):
        raise EdgepruneError("give data= (edgeprune's own loop) or finetune=/evaluate= (yours), not both")
    if output is not None and not own_loop:
        raise EdgepruneError("output= saves what edgeprune's own loop pruned (with data=); save the module yourself")
    says = _Says(on_stage or (lambda _text: None), on_note or (lambda _text: None))
    conveniences = {"method": method, "criterion": criterion, "min_keep": min_keep, "steps": steps, "seed": seed}
    fit = {"epochs": epochs, "batch_size": batch_size, "lr": lr}
    search = {"population": population, "generations": generations, "minutes": search_minutes}
    settings = _settings(settings, conveniences, fit, search)
    if not own_loop:
        net = bundle(model, example_input, input_shape=input_shape, width=width)
        predictor = _predictor(device, target, net, profile_missing, model, says) if target.kind == "ms" else None
        return _prune_with_user_loop(net, target, settings, predictor, finetune, evaluate, search_epochs, progress)
    shape = parse_shape(input_shape)
    where = Path(data_dir) if data_dir is not None else None
    net, dataset = _with_data(model, example_input, data, shape, width, settings.seed, where, limit)
    if not net.trained and not settings.method_class.from_scratch:
        says.note(f"{net.name} is untrained; train it first for meaningful accuracy")
    predictor = _predictor(device, target, net, profile_missing, model, says)
    saved = Path(output) if output is not None else None
    return _prune_with_data(net, dataset, target, settings, predictor, saved, new_search, progress, says)


def _prune_with_user_loop(
    net: ModelBundle,
    target: Target,
    settings: PruneSettings,
    predictor: LatencyPredictor | None,
    finetune: Finetuner | None,
    evaluate: Evaluator | None,
    search_epochs: int,
    progress: Progress | None,
) -> tuple[nn.Module, PruneResult]:
    """Fine-tuning and scoring by the user's code; edgeprune never sees their data."""
    from edgeprune.pruning.methods import prune_module
    from edgeprune.pruning.run import layer_table, measure_outcome
    from edgeprune.pruning.trainer import UserLoop

    loop = UserLoop(finetune, evaluate, search_epochs)
    before = evaluate(net.module) if evaluate is not None else None
    outcome = prune_module(net.module, loop, target, settings, predictor, progress, net.input_shape)
    measured = measure_outcome(net.module, outcome, net.input_shape, predictor)
    result = PruneResult(
        target=target.describe(),
        method=settings.method,
        metric_before=before,
        metric_after=evaluate(outcome.module) if evaluate is not None else None,
        search_evaluations=outcome.search.evaluations if outcome.search else 0,
        layers=layer_table(net.module, outcome.module),
        notes=outcome.notes,
        **measured,
    )
    return outcome.module, result


def _prune_with_data(
    net: ModelBundle,
    dataset: Any,
    target: Target,
    settings: PruneSettings,
    predictor: LatencyPredictor | None,
    output: Path | None,
    new_search: bool,
    progress: Progress | None,
    says: _Says,
) -> tuple[nn.Module, PruneResult]:
    """Edgeprune's own loop on `dataset`; with `output`, the model and its sidecars are written and the
    checkpoints that made it resumable removed."""
    from dataclasses import replace

    from edgeprune import atomic
    from edgeprune.models.io import save_model
    from edgeprune.pruning.run import prune_bundle

    if output is not None:
        settings = replace(
            settings,
            reuse_search=_learned_search(settings, net, output, new_search, says),
            search_file=sidecar(output, ".legr.json"),
            search_checkpoint=sidecar(output, ".search-checkpoint.json"),
            train_checkpoint=sidecar(output, ".finetune-checkpoint.pt"),
        )
    says.stage(f"pruning {net.name} to {target.describe()} with {settings.method} on {dataset.spec}")
    pruned, summary = prune_bundle(net, dataset, target, settings, predictor, progress)
    if output is not None:
        save_model(pruned, output)
        summary_path = sidecar(output, ".json")
        summary = {"output": str(output), "summary": str(summary_path), **summary}
        atomic.write_json(summary_path, summary)
        sidecar(output, ".finetune-checkpoint.pt").unlink(missing_ok=True)
        if summary["search_finished"]:  # an unfinished (time-boxed) search keeps it: --new-search continues it
            sidecar(output, ".search-checkpoint.json").unlink(missing_ok=True)
    keys = ("within_budget", "unchanged", "flops", "params", "original_flops", "original_params")
    result = PruneResult(
        target=summary["target"],
        method=settings.method,
        predicted_ms=summary["predicted_ms"],
        original_predicted_ms=summary["original_predicted_ms"],
        metric_before=summary["accuracy_before"],
        metric_after=summary["accuracy_after"],
        search_evaluations=summary["search_evaluations"],
        layers=summary["layers"],
        notes=summary["notes"],
        summary=summary,
        **{k: summary[k] for k in keys},
    )
    return pruned.module, result
