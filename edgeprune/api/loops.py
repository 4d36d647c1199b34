"""`ep.run` and `ep.sweep`: the closed loop over a resumable folder (`edgeprune run`, `demo` and `sweep`).

Both take the model and the device by name, as the CLI does, because the folder records them to resume; every
other setting is a field of `edgeprune.pipeline.RunConfig`, given as a keyword.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.api.models import Shape, parse_shape
from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    from rich.progress import Progress

    from edgeprune.pipeline import RunConfig, Stages


def _config(caller: str, model: str, device: str, target: str, input_shape: Shape | None, settings: Any) -> RunConfig:
    """The run's settings; an unknown keyword is refused with where the fields are listed."""
    from edgeprune.pipeline import RunConfig

    try:
        return RunConfig(model, device, target, input_shape=parse_shape(input_shape), **settings)
    except TypeError as error:  # an unknown setting: say which fields there are
        raise EdgepruneError(f"{caller}: {error}", hint="settings are fields of edgeprune.pipeline.RunConfig") from None


def _stages(
    on_stage: Callable[[str], None] | None,
    progress: Progress | None,
    on_profile: Callable[[str, int, int], None] | None,
    on_trials: Callable[[int, int, float | None], None] | None,
) -> Stages:
    from edgeprune.pipeline import Stages

    return Stages(on_stage or (lambda _text: None), progress, on_profile, on_trials)


def _default_folder(model: str, device: str, suffix: str = "") -> Path:
    """runs/<model>-<device>: a path names its file's stem (a .toml profile, a saved model)."""
    return Path("runs") / f"{Path(model).stem}-{Path(device).stem}{suffix}"


def run(
    model: str,
    device: str,
    target: str | float,
    *,
    folder: str | Path | None = None,
    input_shape: Shape | None = None,
    deploy: bool = True,
    trust_new_host: bool = False,
    on_stage: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    on_profile: Callable[[str, int, int], None] | None = None,
    on_trials: Callable[[int, int, float | None], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """The whole pipeline to one target (`edgeprune run`): profile, train (when MODEL has no weights), prune,
    compile and measure on the device, pruning again while it misses (or leaves slack under) the target, then
    deploy when the device has SSH and `deploy`; resumable in `folder` (default `runs/<model>-<device>`).

    `target` is milliseconds (2.5) or a fraction of the measured unpruned latency ('0.5x'). `settings`: any
    other field of `edgeprune.pipeline.RunConfig` (data, finetune_epochs, search_minutes, trials, max_rounds,
    slack, ...). `on_stage(text)` announces each step, `on_profile(phase, done, total)` and
    `on_trials(done, total, best_ms)` count profiling and tuning, `progress` (a rich Progress) draws training.
    Returns the summary `summary.json` holds (original vs pruned, rounds, meets_target); the report is
    `report.html` beside it.
    """
    from edgeprune.pipeline import execute

    config = _config("ep.run", model, device, str(target), input_shape, settings)
    out = Path(folder) if folder is not None else _default_folder(model, device)
    stages = _stages(on_stage, progress, on_profile, on_trials)
    return execute(config, out, stages, deploy=deploy, trust_new_host=trust_new_host)


def sweep(
    model: str,
    device: str,
    targets: Sequence[str | float],
    *,
    folder: str | Path | None = None,
    input_shape: Shape | None = None,
    on_stage: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    on_profile: Callable[[str, int, int], None] | None = None,
    on_trials: Callable[[int, int, float | None], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """One LeGR search, then every target pruned, fine-tuned, compiled and measured on the device
    (`edgeprune sweep`); resumable in `folder` (default `runs/<model>-<device>-sweep`), whose `report.html`
    holds the table and the Pareto plot of accuracy against measured latency.

    `targets` are fractions of the measured unpruned latency ('0.5x') or milliseconds (2.5); the search runs at
    the first. `settings` and the callbacks are those of `run`. Returns the summary `sweep.json` holds:
    `original` and one entry of `points` per target (measured_ms, meets_target, speedup, accuracy, flops,
    params, rounds).
    """
    from edgeprune.sweeping import SweepConfig
    from edgeprune.sweeping import sweep as run_sweep

    wanted = tuple(str(t) for t in targets)
    if not wanted:
        raise EdgepruneError("targets is empty", hint="e.g. targets=['0.8x', '0.5x', '0.3x']")
    config = SweepConfig(_config("ep.sweep", model, device, wanted[0], input_shape, settings), wanted)
    out = Path(folder) if folder is not None else _default_folder(model, device, "-sweep")
    return run_sweep(config, out, _stages(on_stage, progress, on_profile, on_trials))
