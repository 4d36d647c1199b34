"""`edgeprune run`: every stage over one run folder, resumable, with the closed loop that makes the budget hold.

profile (only what the LUT lacks) -> train (if the model has no weights) -> compile + verify the original ->
prune -> compile -> verify, repeated while the measured latency misses the target or leaves slack under it, each
round correcting the latency model by what the device measured, keeping the most accurate round that meets ->
deploy (when the device has SSH settings) -> report.
Each stage writes its outputs atomically into the run folder; a finished stage is skipped on a re-run, so a
run interrupted by Ctrl-C or a crash resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeprune import atomic, search_defaults, training_defaults
from edgeprune.devices.base import Device
from edgeprune.devices.profile import load_device
from edgeprune.errors import EdgepruneError
from edgeprune.logs import LOGS, TVM_LOG, tvm_log
from edgeprune.loop import SLACK, Measured, ScaledPredictor, prune_to_measured_target, table_factor

CONFIG = "config.json"
SUMMARY = "summary.json"


RESUMABLE = frozenset({"threads", "max_rounds", "slack"})  # what a resumed run may change: rounds at most


@dataclass(frozen=True)
class RunConfig:
    """What defines a run; a run folder is resumed only with the same config (else it is refused)."""

    model: str
    device: str
    target: str  # "2.5" (ms) or "0.5x" (of the measured unpruned latency)
    data: str | None = None
    input_shape: tuple[int, int, int] | None = None
    width: float = 1.0
    train_epochs: int = training_defaults.EPOCHS
    method: str = "legr"
    finetune_epochs: int = 5
    # prune in this many steps under a decaying target (edgeprune.pruning.schedule); None: one shot, the default
    # until measured (and what run folders from before the option recorded, so they still resume)
    prune_steps: int | None = None
    search_minutes: float = 1.5
    generations: int = search_defaults.GENERATIONS
    population: int = search_defaults.POPULATION
    search_steps: int = search_defaults.STEPS
    # MetaSchedule trials per new task for the profile and every compile, so the table models the kernels that
    # ship; None: the device's [tuning] (profile_trials when profiling, trials when compiling)
    trials: int | None = None
    max_rounds: int = 3
    slack: float = SLACK  # prune again while the measured latency is below this share of the target (0: never)
    # a known correction of the LUT for this board; None: the unpruned model's measured latency over the LUT's
    # prediction of it (the loop learns its own from there)
    latency_scale: float | None = None
    seed: int = 0
    limit: int | None = None
    threads: int = 1  # torch threads; on a small shared machine one is fastest (and leaves a core to the RPC server)

    @property
    def relative_target(self) -> float | None:
        return float(self.target[:-1]) if self.target.endswith("x") else None

    def check(self) -> None:
        from edgeprune.targets import parse_relative, parse_target

        if not self.target.endswith("x"):
            parse_target("ms", self.target)  # a finite positive number of ms (no 'nan', 'inf', '-1')
        else:
            parse_relative(self.target)
        if (
            self.max_rounds < 1
            or (self.trials is not None and self.trials < 1)
            or (self.latency_scale is not None and self.latency_scale <= 0)
            or self.threads < 1
        ):
            raise EdgepruneError("--max-rounds, --trials and --threads must be >= 1, and --latency-scale > 0")
        if not 0 <= self.slack < 1:
            raise EdgepruneError(f"--slack must be in [0, 1) (0: no slack rounds), got {self.slack}")
        from edgeprune.pruning.methods import METHODS, PruneSettings

        if self.method not in METHODS:  # before hours of training and profiling, not after
            raise EdgepruneError(f"unknown method '{self.method}'", hint=f"choose one of {', '.join(METHODS)}")
        if self.prune_steps is not None:
            PruneSettings(method=self.method, steps=self.prune_steps).check()


@dataclass
class Stages:
    """Callbacks for progress; the CLI renders them with rich, tests leave them quiet."""

    announce: Callable[[str], None] = lambda _text: None
    progress: Any = None  # a rich Progress for the stages that draw bars
    profile_progress: Callable[[str, int, int], None] | None = None
    trials_progress: Callable[[int, int, float | None], None] | None = None


@dataclass
class Run:
    config: RunConfig
    folder: Path
    device: Device
    stages: Stages = field(default_factory=Stages)
    shared: Path | None = None  # a sweep's folder: the unpruned network and the LeGR search all its targets use

    def path(self, *parts: str) -> Path:
        return self.folder.joinpath(*parts)

    def shared_path(self, *parts: str) -> Path:
        """Where the compiled unpruned network (`original/`) and the learned search live: a run's own folder, or
        the sweep's when the run is one target of a sweep."""
        return (self.shared or self.folder).joinpath(*parts)

    def done(self, *parts: str) -> dict[str, Any] | None:
        path = self.path(*parts)
        return json.loads(path.read_text()) if path.exists() else None

    def say(self, text: str) -> None:
        self.stages.announce(text)


def _open_folder(config: RunConfig, folder: Path, resumable: frozenset[str] = RESUMABLE) -> None:
    """A new folder gets the config; an existing one is resumed only when its config is the same, apart from
    `resumable` settings, which do not change what was done (--threads; --max-rounds and --slack, so a run can
    go on). A folder where nothing finished yet (a run that failed on its input) takes the new config."""
    path = folder / CONFIG
    wanted = json.loads(json.dumps(asdict(config)))
    if path.exists():
        recorded = json.loads(path.read_text())
        changed = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
        if not changed:
            return
        started = any(p.name not in (CONFIG, LOGS) and not p.name.startswith(".") for p in folder.iterdir())
        if started and (fixed := [k for k in changed if k not in resumable]):
            raise EdgepruneError(
                f"run folder {folder} holds a run with other settings ({', '.join(fixed)})",
                hint="use another --run-dir, or delete the folder to start over",
            )
    atomic.write_json(path, wanted)


def _baseline(run: Run) -> tuple[Any, Any]:
    """The trained model (trained here when MODEL has no weights) and the data it is evaluated on."""
    from edgeprune.models.io import load_saved, save_model
    from edgeprune.pruning import TrainSettings, train_bundle
    from edgeprune.pruning.inputs import model_and_data

    cfg = run.config
    bundle, data = model_and_data(cfg.model, cfg.input_shape, cfg.data, None, cfg.width, cfg.seed, None, cfg.limit)
    model_path = run.path("baseline", "model.pt")
    if model_path.exists():
        return load_saved(model_path), data
    if bundle.trained:
        save_model(bundle, model_path)
        atomic.write_json(
            run.path("baseline", "train.json"), {"trained_here": False, "accuracy": bundle.meta.get("accuracy")}
        )
        return bundle, data
    settings = TrainSettings.recipe_default(
        training_defaults.RECIPE, epochs=cfg.train_epochs, augment=training_defaults.AUGMENT
    )  # `edgeprune train`'s recipe: one default for a baseline, wherever it is trained
    how = training_defaults.variant_name(settings.recipe, settings.augment)
    run.say(f"train {bundle.name} on {data.spec} for {cfg.train_epochs} epochs ({how})")
    checkpoint = run.path("baseline", "train-checkpoint.pt")
    trained, report = train_bundle(bundle, data, settings, cfg.seed, run.stages.progress, checkpoint)
    save_model(trained, model_path)
    atomic.write_json(run.path("baseline", "train.json"), {"trained_here": True, **report})
    checkpoint.unlink(missing_ok=True)
    return trained, data


def _profile(run: Run, bundle: Any) -> dict[str, Any]:
    from edgeprune.profiling.profiler import profile_model

    if (done := run.done("profile.json")) is not None:
        return done
    run.say(f"profile the layers of {bundle.name} on {run.device.name} (only entries the LUT lacks)")
    report = profile_model(bundle, run.device, trials=run.config.trials, on_progress=run.stages.profile_progress)
    result = report.to_json()
    atomic.write_json(run.path("profile.json"), result)
    return result


def _compile_and_verify(
    run: Run,
    bundle: Any,
    folder: str,
    target_ms: float | None = None,
    baseline: Path | None = None,
    target_ratio: float | None = None,
    precision: float | None = None,
) -> dict[str, Any]:
    from edgeprune.compile.compiler import compile_model
    from edgeprune.verify.verifier import verify_artifact

    artifacts = run.path(folder)
    if not (artifacts / "manifest.json").exists():
        trials = run.device.tuning.trials if run.config.trials is None else run.config.trials
        run.say(f"compile {folder} for {run.device.name} ({trials} MetaSchedule trials per new task)")
        result = compile_model(bundle, run.device, artifacts, run.config.trials, on_trials=run.stages.trials_progress)
        atomic.write_json(run.path(f"{folder}.compile.json"), result.to_json())
    if (done := run.done(folder, "verify.json")) is not None:
        return done
    run.say(f"measure {folder} on {run.device.name}")
    verify_artifact(
        artifacts, run.device, target_ms=target_ms, baseline=baseline, target_ratio=target_ratio, precision=precision
    )
    return json.loads((artifacts / "verify.json").read_text())


def _reference(run: Run, bundle: Any) -> dict[str, Any]:
    """The run's one reference measurement of the unpruned network, which fixes its relative target: compiled
    into `original/` and measured until its median's 95% interval is within REFERENCE_PRECISION (or the sample
    cap is reached: the interval it got is recorded); written once, reused on resume and by every target of a
    sweep, so the target does not move with the load of the moment. Returns its verify.json."""
    from edgeprune.verify.defaults import REFERENCE_PRECISION

    return _compile_and_verify(run, bundle, "original", precision=REFERENCE_PRECISION)


def health_warnings(*verified: dict[str, Any] | None) -> list[str]:
    """What the board's health said during these verifications (their verify.json), each warning once."""
    said = [w for v in verified if v for w in (v.get("health") or {}).get("warnings", [])]
    return list(dict.fromkeys(said))


def reference_record(run: Run, verified: dict[str, Any]) -> dict[str, Any]:
    """What a summary says of the reference: its ms, its interval, the precision asked and the one reached."""
    from edgeprune.verify.defaults import REFERENCE_PRECISION

    interval = verified.get("interval")
    return {
        "measured_ms": verified["measured_ms"],
        "interval": interval,
        "precision_goal": REFERENCE_PRECISION,
        "precision": None if interval is None else (interval["high"] - interval["low"]) / 2 / interval["estimate"],
        "file": str(run.shared_path("original", "verify.json")),
    }


def _prune_round(run: Run, bundle: Any, data: Any, lut: Any, target_ms: float, scale: float, index: int) -> Any:
    from edgeprune.models.io import load_saved, save_model
    from edgeprune.pruning import METHODS, PruneSettings, SearchSettings, TrainSettings, parse_target, prune_bundle

    folder = f"round-{index}"
    model_path = run.path(folder, "pruned.pt")
    if model_path.exists() and run.path(folder, "prune.json").exists():  # both written: the round is done
        return load_saved(model_path)
    cfg = run.config
    run.say(f"round {index}: prune to {target_ms:.3f} ms predicted (LUT x {scale:.3f}) with {cfg.method}")
    predictor = ScaledPredictor(lut, scale)
    learned = run.shared_path("learned-legr.json")
    searches = METHODS.get(cfg.method).searches  # legr and legr-knapsack reuse the first round's search
    settings = PruneSettings(
        method=cfg.method,
        finetune=TrainSettings(epochs=cfg.finetune_epochs),
        search=SearchSettings.sized(cfg.population, cfg.generations, cfg.search_steps, cfg.search_minutes),
        seed=cfg.seed,
        steps=cfg.prune_steps or PruneSettings.steps,
        reuse_search=learned if learned.exists() and searches else None,
        search_file=learned if searches else None,
        search_checkpoint=run.path(folder, "search-checkpoint.json"),
        train_checkpoint=run.path(folder, "finetune-checkpoint.pt"),
    )
    pruned, summary = prune_bundle(
        bundle, data, parse_target("ms", target_ms), settings, predictor, run.stages.progress
    )
    summary["latency_scale"] = scale
    summary["lut_predicted_ms"] = lut.predict_ms(pruned.module, pruned.input_shape)
    save_model(pruned, model_path)
    atomic.write_json(run.path(folder, "prune.json"), summary)
    return pruned


@dataclass
class _RunRounds:
    """The closed loop's steps over a run folder: each round's outputs live in `round-N/` and are reused on resume."""

    run: Run
    bundle: Any
    data: Any
    lut: Any
    target_ms: float

    def prune(self, index: int, scale: float) -> Any:
        return _prune_round(self.run, self.bundle, self.data, self.lut, self.target_ms, scale, index)

    def pruned_with(self, index: int, scale: float) -> float:
        return float(self.run.done(f"round-{index}", "prune.json")["latency_scale"])  # type: ignore[index]

    def predicted_ms(self, index: int, candidate: Any) -> float:
        return float(self.run.done(f"round-{index}", "prune.json")["lut_predicted_ms"])  # type: ignore[index]

    def measure(self, index: int, candidate: Any) -> Measured:
        from edgeprune.confidence import Interval
        from edgeprune.verify.defaults import REFERENCE_PRECISION

        verified = _compile_and_verify(
            self.run,
            candidate,
            f"round-{index}/artifacts",
            self.target_ms,
            self.run.shared_path("original"),
            self.run.config.relative_target,
            REFERENCE_PRECISION,  # the loop aims below the target by the interval's reach: a narrow one aims close
        )
        interval, ratio = (verified.get(k) for k in ("interval", "ratio"))
        return Measured(
            verified["measured_ms"],
            verified["measured_spread_ms"],
            verified["baseline_ms"],
            None if interval is None else Interval(**interval),
            None if ratio is None else Interval(**ratio),
        )

    def accuracy(self, index: int, candidate: Any) -> float:
        """The fine-tuned round's accuracy on the validation split: the test split stays out of the choice."""
        from edgeprune.pruning.finetune import evaluate

        return evaluate(candidate.module, self.data, self.data.val)[1]


def _artifact_bytes(folder: Path) -> int:
    manifest = json.loads((folder / "manifest.json").read_text())
    return (folder / manifest["library"]).stat().st_size


def execute(
    config: RunConfig,
    folder: Path,
    stages: Stages | None = None,
    *,
    deploy: bool = True,
    trust_new_host: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the whole pipeline; returns the summary that `run --json` prints.

    The summary and report are written before deploying, so a board that cannot be reached leaves the
    measured result on disk (the summary then records the deploy error, and the error is raised). TVM's own
    output (MetaSchedule's tables and trials) is appended to `<folder>/logs/tvm.log`."""
    started = time.monotonic()
    config.check()
    device = load_device(config.device)
    folder.mkdir(parents=True, exist_ok=True)
    _open_folder(config, folder)
    run = Run(config, folder, device, stages or Stages())
    with tvm_log(folder / LOGS / TVM_LOG):  # TVM's tuning tables and trials: here, not on the terminal
        return _execute(run, deploy, trust_new_host, started)


def _execute(run: Run, deploy: bool, trust_new_host: bool, started: float) -> dict[str, Any]:
    """The stages of `execute` over its opened folder, TVM's output going to the folder's log."""
    from edgeprune.pruning import LatencyPredictor
    from edgeprune.pruning.cost import measure
    from edgeprune.verify.verifier import ort_timing

    config, folder, device = run.config, run.folder, run.device
    with device.serving(1):
        bundle, data = _baseline(run)
        _profile(run, bundle)
        lut = LatencyPredictor(device, bundle, profile_missing=True)
        reference = _reference(run, bundle)
        reference_ms = reference["measured_ms"]
        target_ms = reference_ms * config.relative_target if config.relative_target else float(config.target)
        if reference_ms <= target_ms:
            raise EdgepruneError(
                f"the unpruned model already runs in {reference_ms:.3f} ms <= target {target_ms:.3f} ms",
                hint="nothing to prune; lower the target",
            )
        factor = config.latency_scale or table_factor(reference_ms, lut.predict_ms(bundle.module, bundle.input_shape))
        result = prune_to_measured_target(
            _RunRounds(run, bundle, data, lut, target_ms),
            reference_ms,
            target_ms,
            config.max_rounds,
            scale=factor,
            relative=config.relative_target,
            slack=config.slack,
            say=run.say,
        )
    chosen = result.chosen
    final = run.path(f"round-{chosen.round}", "artifacts")
    kept = run.done(f"round-{chosen.round}", "artifacts", "verify.json") or {}
    prune_summary = run.done(f"round-{chosen.round}", "prune.json") or {}
    flops0, params0 = measure(bundle.module, bundle.input_shape)
    pruned_verify = run.done(f"round-{chosen.round}", "artifacts", "verify.json")
    summary = {
        "run_dir": str(folder),
        "model": config.model,
        "device": device.name,
        "timings_are_real": device.timings_are_real,
        "target_ms": chosen.target_ms,
        "target_ratio": config.relative_target,
        "lut_factor": factor,
        "reference": reference_record(run, reference),
        "meets_target": chosen.meets_target,
        "verdict": chosen.verdict,
        "health_warnings": health_warnings(reference, kept),
        "speedup": chosen.speedup,
        "rounds": len(result.rounds),
        "chosen_round": chosen.round,
        "stopped": result.stopped,
        "round_details": [asdict(r) for r in result.rounds],
        "original": {
            "measured_ms": reference_ms,
            "predicted_ms": lut.predict_ms(bundle.module, bundle.input_shape),
            "accuracy": bundle.meta.get("accuracy"),
            "flops": flops0,
            "params": params0,
            "artifact_bytes": _artifact_bytes(run.path("original")),
            **ort_timing(reference),
        },
        "pruned": {
            "measured_ms": chosen.measured_ms,
            "ratio": chosen.ratio,
            "interval": kept.get("interval"),
            "predicted_ms": chosen.predicted_ms,
            "accuracy": prune_summary.get("accuracy_after"),
            "flops": prune_summary.get("flops"),
            "params": prune_summary.get("params"),
            "artifact_bytes": _artifact_bytes(final),
            **ort_timing(pruned_verify),
        },
        "deploy": None,
        "seconds": round(time.monotonic() - started, 1),
    }
    _write_summary(run, summary)
    if deploy and chosen.meets_target and device.ssh is not None:
        try:
            summary["deploy"] = _deploy(run, final, trust_new_host)
        except EdgepruneError as error:
            summary["deploy"] = {"error": error.message}
            raise
        finally:
            summary["seconds"] = round(time.monotonic() - started, 1)
            _write_summary(run, summary)
    return summary


def _write_summary(run: Run, summary: dict[str, Any]) -> None:
    from edgeprune.profiling.lut import lut_path
    from edgeprune.report.build import write_report

    atomic.write_json(run.path(SUMMARY), summary)
    write_report(run.folder, summary, lut_path(run.device))


def _deploy(run: Run, artifacts: Path, trust_new_host: bool) -> dict[str, Any]:
    """The final artifacts to the board, into a folder named after the run (one run does not replace another)."""
    if (done := run.done("deploy.json")) is not None:
        return done
    from edgeprune.deploy.deployment import deploy_artifact

    run.say(f"deploy to {run.device.ssh.user}@{run.device.ssh.host}")  # type: ignore[union-attr]
    from edgeprune.deploy.artifact import board_name

    name = board_name(run.folder.resolve().name)
    result = deploy_artifact(artifacts, run.device, name=name, trust_new_host=trust_new_host)
    atomic.write_json(run.path("deploy.json"), result)
    return result
