"""`edgeprune sweep`: one LeGR search, then every target of a list pruned, compiled and measured on the device.

LeGR's point is that the learned per-group (alpha, kappa) rank channels for any budget: the costly search runs
once, at the first target, and every other target reuses its file (`learned-legr.json`). Each target then goes
through the closed loop of `edgeprune run` (prune, compile, measure beside the unpruned network, correct the
latency model while the device misses), with the same functions, so a sweep's points are what `run` would give.

The sweep folder holds what the targets share (the trained `baseline/`, `profile.json`, the compiled unpruned
network `original/`, the search) and one sub-folder per target (`target-0.5x/round-N/...`, its `point.json`).
Every file is written atomically and every finished step is reused, so an interrupted sweep resumes where it
stopped; `sweep.json` and `report.html` (a table and the Pareto plot of accuracy against measured latency) are
written at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from edgeprune import atomic
from edgeprune.devices.profile import load_device
from edgeprune.errors import EdgepruneError
from edgeprune.logs import LOGS, TVM_LOG, tvm_log
from edgeprune.loop import LoopSteps, prune_to_measured_target, table_factor
from edgeprune.pipeline import (
    RESUMABLE,
    Run,
    RunConfig,
    Stages,
    _baseline,
    _open_folder,
    _profile,
    _reference,
    _RunRounds,
    health_warnings,
    reference_record,
)

SWEEP = "sweep.json"
POINT = "point.json"


def parse_targets(text: str) -> tuple[str, ...]:
    """'0.8x,0.6x,2.5' -> ('0.8x', '0.6x', '2.5'): fractions of the unpruned latency, or milliseconds."""
    targets = tuple(t.strip() for t in text.split(",") if t.strip())
    if not targets:
        raise EdgepruneError("--targets is empty", hint="e.g. --targets 0.8x,0.6x,0.5x,0.4x")
    return targets


def target_folder(target: str) -> str:
    """A target's sub-folder: `target-0.5x`, or `target-2.5ms` for milliseconds."""
    return f"target-{target}" if target.endswith("x") else f"target-{target}ms"


@dataclass(frozen=True)
class SweepConfig:
    """A run's settings and the targets; `run.target` is ignored (each target gets a copy of `run` with its own)."""

    run: RunConfig
    targets: tuple[str, ...]

    def for_target(self, target: str) -> RunConfig:
        return replace(self.run, target=target)

    @property
    def shared(self) -> RunConfig:
        """The settings of the sweep folder itself: those of the first target, where the one search runs."""
        return self.for_target(self.targets[0])

    def check(self) -> None:
        if not self.targets:
            raise EdgepruneError("a sweep needs at least one target", hint="e.g. --targets 0.8x,0.6x,0.5x,0.4x")
        if len(set(self.targets)) != len(self.targets):
            raise EdgepruneError(f"--targets {','.join(self.targets)} names a target twice")
        for target in self.targets:
            self.for_target(target).check()
        if self.run.latency_scale is not None:
            raise EdgepruneError(
                "a sweep measures the latency table's factor on the unpruned network: --latency-scale does not apply"
            )


def open_sweep_folder(config: SweepConfig, folder: Path) -> None:
    """Record the sweep's settings in its folder, or check them on resume. The folder's own work (baseline,
    profile, the unpruned build, the search's file) does not depend on which target comes first, so targets
    may be reordered or added in front; each target's sub-folder checks its own settings."""
    folder.mkdir(parents=True, exist_ok=True)
    _open_folder(config.shared, folder, RESUMABLE | {"target"})


def sweep(config: SweepConfig, folder: Path, stages: Stages | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the summary written to `sweep.json` (one point per target).

    Raises before any pruning when a target is not below the unpruned model's measured latency. A target the
    pruner cannot reach is recorded with its reason (and no latency), and the sweep goes on with the others."""
    from edgeprune.profiling.lut import lut_path
    from edgeprune.pruning import LatencyPredictor
    from edgeprune.pruning.cost import measure
    from edgeprune.report.build import write_sweep_report
    from edgeprune.verify.verifier import ort_timing

    started = time.monotonic()
    config.check()
    device = load_device(config.run.device)
    open_sweep_folder(config, folder)
    shared = Run(config.shared, folder, device, stages or Stages())
    with tvm_log(folder / LOGS / TVM_LOG), device.serving(1):  # TVM's tuning output: the sweep's log, not the terminal
        bundle, data = _baseline(shared)
        _profile(shared, bundle)
        lut = LatencyPredictor(device, bundle, profile_missing=True)
        original = _reference(shared, bundle)
        predicted_ms = lut.predict_ms(bundle.module, bundle.input_shape)
        steps = partial(_RunRounds, bundle=bundle, data=data, lut=lut)
        factor = table_factor(original["measured_ms"], predicted_ms)
        points = sweep_targets(shared, config, original["measured_ms"], steps, factor)
    flops, params = measure(bundle.module, bundle.input_shape)
    said = health_warnings(original) + [w for p in points for w in p.get("health_warnings", [])]
    summary = {
        "sweep_dir": str(folder),
        "model": config.run.model,
        "device": device.name,
        "timings_are_real": device.timings_are_real,
        "method": config.run.method,
        "search": _search(folder),
        "lut_factor": factor,
        "reference": reference_record(shared, original),
        "health_warnings": list(dict.fromkeys(said)),
        "original": {
            "measured_ms": original["measured_ms"],
            "spread_ms": original["measured_spread_ms"],
            "predicted_ms": predicted_ms,
            "accuracy": bundle.meta.get("accuracy"),
            "flops": flops,
            "params": params,
            **ort_timing(original),
        },
        "points": points,
        "seconds": round(time.monotonic() - started, 1),
    }
    atomic.write_json(folder / SWEEP, summary)
    write_sweep_report(folder, summary, lut_path(device))
    return summary


def _check_targets(config: SweepConfig, original_ms: float) -> None:
    """Refuse millisecond targets the unpruned model already meets, before hours of pruning the others."""
    met = [t for t in config.targets if config.for_target(t).relative_target is None and float(t) >= original_ms]
    if met:
        raise EdgepruneError(
            f"the unpruned model already runs in {original_ms:.3f} ms, within target(s) {', '.join(met)} ms",
            hint="nothing to prune there; give targets below it (or fractions like 0.5x)",
        )


def sweep_targets(
    shared: Run, config: SweepConfig, original_ms: float, steps: Callable[..., LoopSteps[Any]], factor: float = 1.0
) -> list[dict[str, Any]]:
    """Every target through the closed loop, in order, each in its own sub-folder of the sweep folder `shared`;
    `steps(run=..., target_ms=...)` gives a target's rounds (`_RunRounds` on a real device: prune, compile,
    measure). The first target's first round runs the LeGR search; the others find its file and reuse it.

    Every target's first round scales the latency table by `factor`: what the device measured for the unpruned
    network over what the table predicts for it. A table profiled under other conditions (another load, a
    warmer board) is then right for the unpruned network from the start, instead of costing each target a
    compiled and measured round to learn it; the closed loop corrects what is left."""
    _check_targets(config, original_ms)
    return [_point(shared, config.for_target(t), original_ms, steps, factor) for t in config.targets]


def _point(
    shared: Run, config: RunConfig, original_ms: float, steps: Callable[..., LoopSteps[Any]], factor: float
) -> dict[str, Any]:
    """One target through the closed loop in its own sub-folder; every step already on disk is reused, and a
    target found out of reach is not pruned again on resume (its first round would fail the same way: the
    reference and the table's factor it started from are the sweep's own, reused too)."""
    from edgeprune.pruning.ranking import BudgetUnreachable
    from edgeprune.verify.verifier import ort_timing

    folder = shared.path(target_folder(config.target))
    folder.mkdir(exist_ok=True)
    _open_folder(config, folder)
    run = Run(config, folder, shared.device, shared.stages, shared=shared.folder)
    if (done := run.done(POINT)) is not None and "unreachable" in done:
        run.say(f"target {config.target}: out of reach, as recorded in {folder / POINT}")
        return done
    target_ms = original_ms * config.relative_target if config.relative_target else float(config.target)
    run.say(f"target {config.target} ({target_ms:.3f} ms)")
    try:
        result = prune_to_measured_target(
            steps(run=run, target_ms=target_ms),
            original_ms,
            target_ms,
            config.max_rounds,
            scale=factor,
            relative=config.relative_target,
            slack=config.slack,
            say=run.say,
        )
    except BudgetUnreachable as error:
        point: dict[str, Any] = {"target": config.target, "target_ms": target_ms, "unreachable": error.message}
        atomic.write_json(folder / POINT, point)
        return point
    last = result.chosen  # the most accurate round that meets the target (the last one when none does)
    pruned = run.done(f"round-{last.round}", "prune.json") or {}
    verified = run.done(f"round-{last.round}", "artifacts", "verify.json") or {}
    point = {
        "target": config.target,
        "target_ms": last.target_ms,
        "measured_ms": last.measured_ms,
        "spread_ms": last.spread_ms,
        "baseline_ms": last.baseline_ms,
        "meets_target": last.meets_target,
        "verdict": last.verdict,
        "target_ratio": last.target_ratio,
        "ratio": last.ratio,
        "speedup": last.speedup,
        "predicted_ms": last.predicted_ms,
        "accuracy": pruned.get("accuracy_after"),
        "flops": pruned.get("flops"),
        "params": pruned.get("params"),
        "artifacts": str(folder / f"round-{last.round}" / "artifacts"),
        "chosen_round": last.round,
        "stopped": result.stopped,
        "rounds": [asdict(r) for r in result.rounds],
        "health_warnings": health_warnings(verified),
        **ort_timing(verified),
    }
    atomic.write_json(folder / POINT, point)
    return point


def _search(folder: Path) -> dict[str, Any] | None:
    """What the one LeGR search did (None for methods without a search)."""
    import json

    path = folder / "learned-legr.json"
    if not path.exists():
        return None
    learned = json.loads(path.read_text())
    keys = ("searched_for", "evaluations", "seconds", "fitness", "identity_fitness")
    return {"file": str(path), **{k: learned.get(k) for k in keys}}
