"""The Python API: the CLI's stages as functions over a user's own `nn.Module` and example input.

    import edgeprune as ep
    with ep.device("local") as dev:             # the local farm runs for the block
        ep.profile(model, x, dev)                # measure the latency table the model needs
        small, result = ep.prune(model, x, target_ms=2.0, device=dev, finetune=my_finetune, evaluate=my_eval)
        compiled = ep.compile(small, x, dev, "artifacts/")
        print(ep.verify(compiled, dev, target_ms=2.0).measured_ms)
    ep.sweep("resnet20", "local", ["0.8x", "0.5x", "0.3x"], data="digits")  # one search, many measured targets

Every function calls the library function the CLI calls (one code path); the user's model is traced to the same
fx graph a MODEL argument becomes. Heavy imports (torch, TVM) happen inside the functions, because the CLI
imports this package and `edgeprune --help` must stay fast.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune import search_defaults
from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeprune.compile.compiler import CompileResult
    from edgeprune.devices.base import Device
    from edgeprune.models.io import ModelBundle
    from edgeprune.profiling.profiler import ProfileReport
    from edgeprune.pruning.budget import LatencyPredictor, Target
    from edgeprune.pruning.finetune import Evaluator, Finetuner
    from edgeprune.verify.verifier import VerifyResult


def device(name: str) -> Device:
    """A device by name, as `--device` takes it: `local`, a profile name, or a path to a .toml profile.

    `with ep.device("local") as dev:` keeps its RPC servers (the local farm) up for the block; without it,
    each stage starts the farm for its own duration.
    """
    from edgeprune.devices.profile import load_device

    return load_device(name)


def _bundle(model: nn.Module | str, example_input: torch.Tensor) -> ModelBundle:
    """The user's model as the stages take it: traced to an fx graph, with the input shape of one example."""
    from torch import nn

    from edgeprune.models.io import ModelBundle, check_forward, load_model, to_graph_module

    shape = tuple(int(d) for d in getattr(example_input, "shape", ()))
    if len(shape) != 4:
        raise EdgepruneError(
            f"example_input must be an image batch [N, C, H, W], got shape {list(shape)}",
            hint="e.g. torch.randn(1, 3, 32, 32)",
        )
    image: tuple[int, int, int] = (shape[1], shape[2], shape[3])
    if isinstance(model, str):
        return load_model(model, input_shape=image)
    if not isinstance(model, nn.Module):
        raise EdgepruneError(f"model must be a torch.nn.Module or a MODEL string, got {type(model).__name__}")
    # a copy: tracing shares the layers with the model, and stages switch them to eval mode, evaluate the copy
    # or fine-tune it, none of which may touch the user's model
    own = copy.deepcopy(model)
    classes = check_forward(own, image)
    graph = to_graph_module(own, image)
    meta = {"arch": type(model).__name__, "trained": True, "source": f"python:{type(model).__name__}"}
    return ModelBundle(graph, image, classes, meta)


def profile(
    model: nn.Module | str,
    example_input: torch.Tensor,
    device: Device,
    *,
    parallel: bool = False,
    trials: int | None = None,
    grid: int | None = None,
) -> ProfileReport:
    """Measure the latency-table entries `model` needs on `device` (`edgeprune profile`): resumable, and
    entries already measured for other models are reused. Returns what was measured and where it is stored."""
    from edgeprune.profiling.profiler import profile_model

    bundle = _bundle(model, example_input)
    return profile_model(bundle, device, grid=grid, parallel=parallel, trials=trials)


@dataclass
class LatencyModel:
    """A device's latency model for one input size: `predict_ms(model)` for the model or any pruned variant."""

    predictor: LatencyPredictor
    input_shape: tuple[int, int, int]

    def predict_ms(self, model: nn.Module) -> float:
        """Predicted milliseconds of one inference on the device, from its latency table."""
        return self.predictor.predict_ms(model, self.input_shape)


def latency_model(
    device: Device, model: nn.Module | str, example_input: torch.Tensor, *, profile_missing: bool = True
) -> LatencyModel:
    """The device's latency model (`edgeprune estimate`); with `profile_missing`, entries the model lacks are
    measured first (a one-off cost on a new device; later calls reuse the table)."""
    from edgeprune.pruning.budget import LatencyPredictor

    bundle = _bundle(model, example_input)
    return LatencyModel(LatencyPredictor(device, bundle, profile_missing=profile_missing), bundle.input_shape)


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
    metric_before: float | None  # the user's evaluate(model), when given
    metric_after: float | None
    search_evaluations: int
    layers: list[dict[str, Any]] = field(default_factory=list)  # output channels per layer, before and after
    notes: list[str] = field(default_factory=list)


def _target(target_ms: float | None, target_flops: float | str | None, target_params: float | str | None) -> Target:
    from edgeprune.pruning.budget import parse_target

    given = {k: v for k, v in (("ms", target_ms), ("flops", target_flops), ("params", target_params)) if v is not None}
    if len(given) != 1:
        raise EdgepruneError(
            "give exactly one target: target_ms, target_flops or target_params",
            hint="e.g. target_flops='50%' (of the original) or target_ms=2.5 with a device",
        )
    ((kind, value),) = given.items()
    return parse_target(kind, value)


def prune(
    model: nn.Module | str,
    example_input: torch.Tensor,
    *,
    target_ms: float | None = None,
    target_flops: float | str | None = None,
    target_params: float | str | None = None,
    device: Device | None = None,
    method: str = "legr",
    criterion: str | None = None,
    finetune: Finetuner | None = None,
    evaluate: Evaluator | None = None,
    epochs: int = 5,
    search_epochs: int = 1,
    search_minutes: float = 3.0,
    population: int = search_defaults.POPULATION,
    generations: int = search_defaults.GENERATIONS,
    min_keep: float = 0.1,
    seed: int = 0,
) -> tuple[nn.Module, PruneResult]:
    """Prune to one budget (`edgeprune prune`) with the user's own training code; returns a physically
    smaller module (an fx GraphModule; the input model is left as it was) and the result.

    `finetune(model, epochs)` trains a model in place, `evaluate(model) -> float` scores it (higher is better):
    the pruned model gets `epochs` of fine-tuning, and each LeGR search candidate is cut, fine-tuned
    `search_epochs` and scored (the search runs `population + generations` candidates, `search_minutes` at
    most). `target_ms` needs a `device` (its latency table, measured where it lacks entries; other targets
    use no device); FLOPs and
    parameter targets take a number or a share of the original ('50%'). Without `finetune` the pruned model is
    not fine-tuned; methods other than 'legr' need no `evaluate`. Only data-free criteria apply here (l1, l2,
    bn, synflow); `criterion=None` is the method's default.
    """
    from edgeprune.pruning.budget import LatencyPredictor
    from edgeprune.pruning.finetune import TrainSettings, UserLoop
    from edgeprune.pruning.methods import PruneSettings, prune_module
    from edgeprune.pruning.run import layer_table, measure_outcome
    from edgeprune.pruning.search import SearchSettings

    target = _target(target_ms, target_flops, target_params)
    if target.kind == "ms" and device is None:
        raise EdgepruneError("target_ms needs a device whose latency is predicted", hint="pass device=ep.device(...)")
    bundle = _bundle(model, example_input)
    # the tournament is the CLI's default size, or the whole population when that is smaller
    sample = min(SearchSettings.sample_size, population)
    search = SearchSettings(population=population, sample_size=sample, generations=generations, minutes=search_minutes)
    settings = PruneSettings(
        method=method,
        criterion=criterion,
        min_keep=min_keep,
        finetune=TrainSettings(epochs=epochs),
        search=search,
        seed=seed,
    )
    loop = UserLoop(finetune, evaluate, search_epochs)
    predictor = LatencyPredictor(device, bundle, profile_missing=True) if target.kind == "ms" else None
    before = evaluate(bundle.module) if evaluate is not None else None
    outcome = prune_module(bundle.module, loop, target, settings, predictor, input_shape=bundle.input_shape)
    measured = measure_outcome(bundle.module, outcome, bundle.input_shape, predictor)
    result = PruneResult(
        target=target.describe(),
        method=method,
        metric_before=before,
        metric_after=evaluate(outcome.module) if evaluate is not None else None,
        search_evaluations=outcome.search.evaluations if outcome.search else 0,
        layers=layer_table(bundle.module, outcome.module),
        notes=outcome.notes,
        **measured,
    )
    return outcome.module, result


def compile(  # shadows the builtin inside this module only: ep.compile reads as the stage it is
    model: nn.Module | str,
    example_input: torch.Tensor,
    device: Device,
    out: str | Path = "artifacts",
    *,
    trials: int | None = None,
) -> CompileResult:
    """Export, tune on the device (`trials` per task its tuning database lacks, by default the device's
    `[tuning]` setting; 0: untuned), build, and write the artifact folder `out` (`edgeprune compile`); verify
    and deploy take the result or the folder."""
    from edgeprune.compile.compiler import compile_model

    bundle = _bundle(model, example_input)
    return compile_model(bundle, device, Path(out), trials)


def _folder(artifacts: str | Path | CompileResult) -> Path:
    """An artifact folder given as a path or as what `compile` returned."""
    return Path(artifacts) if isinstance(artifacts, (str, Path)) else artifacts.artifact.folder


def verify(
    artifacts: str | Path | CompileResult,
    device: Device,
    *,
    target_ms: float | None = None,
    baseline: str | Path | None = None,
    repeat: int | None = None,
) -> VerifyResult:
    """Measure the compiled model on the device and check its outputs against PyTorch (`edgeprune verify`);
    `result.passed`, `result.measured_ms`, `result.meets_target`. Writes `verify.json` into the folder."""
    from edgeprune.verify.verifier import verify_artifact

    return verify_artifact(
        _folder(artifacts), device, target_ms, Path(baseline) if baseline is not None else None, repeat
    )


def deploy(
    artifacts: str | Path | CompileResult, device: Device, *, name: str | None = None, trust_new_host: bool = False
) -> dict[str, Any]:
    """Upload the artifact folder to the device over SSH, check it and smoke-run it there (`edgeprune deploy`);
    returns where it went and the smoke run's result."""
    from edgeprune.deploy.deployment import deploy_artifact

    return deploy_artifact(_folder(artifacts), device, name=name, trust_new_host=trust_new_host)


def sweep(
    model: str,
    device: str,
    targets: Sequence[str | float],
    *,
    data: str | None = None,
    folder: str | Path | None = None,
    input_shape: tuple[int, int, int] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """One LeGR search, then every target pruned, fine-tuned, compiled and measured on the device
    (`edgeprune sweep`); resumable in `folder` (default `runs/<model>-<device>-sweep`), whose `report.html`
    holds the table and the Pareto plot of accuracy against measured latency.

    `model` and `device` are names as the CLI takes them (a sweep folder records them, to resume); `targets`
    are fractions of the measured unpruned latency ('0.5x') or milliseconds (2.5); the search runs at the first.
    `settings`: any other field of `edgeprune.pipeline.RunConfig` (finetune_epochs, search_minutes, trials,
    max_rounds, ...). Returns the summary `sweep.json` holds: `original` and one entry of `points` per target
    (measured_ms, meets_target, speedup, accuracy, flops, params, rounds).
    """
    from edgeprune.pipeline import RunConfig
    from edgeprune.sweeping import SweepConfig
    from edgeprune.sweeping import sweep as run_sweep

    wanted = tuple(str(t) for t in targets)
    if not wanted:
        raise EdgepruneError("targets is empty", hint="e.g. targets=['0.8x', '0.5x', '0.3x']")
    try:
        run = RunConfig(model, device, wanted[0], data=data, input_shape=input_shape, **settings)
    except TypeError as error:  # an unknown setting: say which fields there are
        raise EdgepruneError(f"ep.sweep: {error}", hint="settings are fields of edgeprune.pipeline.RunConfig") from None
    out = Path(folder) if folder is not None else Path("runs") / f"{Path(model).stem}-{Path(device).stem}-sweep"
    return run_sweep(SweepConfig(run, wanted), out)
