"""How MetaSchedule tunes on a device: one typed, validated setting per knob (import-free, so profiles load fast).

It lives in the device layer because a device carries it: a profile's `[tuning]` table overrides the defaults
for its board, and a command's flags override the profile (`with_changes`); the tuner (tvmx/tune.py), which
sits above devices, reads it. Defaults are what the measurements in bench/results/runtime.md (issue 36) support
on a small shared x86 machine: evolutionary search with the XGBoost cost model over a population of 128 (512
cost ~20 s of search per round and task) found kernels replay-trace with random sampling needed several times
the trials for; see that file for the per-layer tables each setting was judged on.

The `layout` setting's names are resolved here too (`concrete`, `block_of`): which layout a device compiles its
convolutions in is a fact of its target and channel step; what TVM does with a blocked layout is tvmx/layout.py.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from edgeprune.errors import EdgepruneError

# MetaSchedule trials per task at compile, for a shape the device's database has no record of: the pruned
# variant's new shapes (those on the latency table's grid were recorded when profiling).
TRIALS = 16
# Trials per task when `profile` tunes the full-width network once: the records every later compile reuses.
# Measured on resnet20 3x32x32, 1 thread, evolutionary + xgb (bench/results/runtime.md, runtime-layers.md): at 32
# its NCHW16c kernels (the default layout, NCHWc) were level with ONNX Runtime's, 1.01x end to end (NCHW: 1.58x);
# 32 took 6.5 min (NCHWc) to 14 min on 2 loaded cores, 64 twice that for ~10% more.
PROFILE_TRIALS = 32

PLAIN = "NCHW"
DEVICE_BLOCK = "NCHWc"  # blocked by the device's channel step (its SIMD lanes: the grid the pruner keeps widths on)
_BLOCKED = re.compile(r"NCHW([1-9][0-9]*)c")

STRATEGIES = ("replay-trace", "evolutionary")
COST_MODELS = ("random", "xgb")
TASK_SCHEDULERS = ("round-robin", "gradient")
ALL_OPS = "all"  # in `ops`: tune every kernel the network has, not only the named ones


@dataclass(frozen=True)
class TuningConfig:
    """One tuning run's settings. `trials` is what `compile` spends per task the database lacks (and cannot
    reuse from a family record); `profile_trials` is the profile's deeper budget for the full-width network,
    whose records every later compile reuses."""

    trials: int = TRIALS  # per new task at compile (0: build untuned)
    profile_trials: int = PROFILE_TRIALS  # per task at profile time (the anchors every later compile reuses)
    max_trials: int | None = None  # per tuning run, over all tasks (None: trials x tasks)
    minutes: float | None = None  # per tuning run: the tuner stops after it and keeps what it measured
    strategy: str = "evolutionary"
    population: int = 128  # evolutionary only: 128 searched in ~5 s a round on one thread, 512 in ~20 s
    cost_model: str = "xgb"
    task_scheduler: str = "round-robin"
    ops: tuple[str, ...] = ("conv2d", "matmul", "dense")  # substrings of task names, or "all"
    # compile: give a new shape its family's tuned schedule (re-applied, measured) instead of tuning it. Off by
    # default, the evidence being split (transplanted vs 16 fresh trials per task): resnet20 stand-in at width
    # 0.707 (channels off the device's grid), 48-trial database, loaded machine: 2.40 vs 1.58 ms; on a quiet one
    # (bench/results/runtime.md) resnet20 pruned by `run`, 128-trial database: 0.355 vs 0.516 ms, but the
    # mobilenetv2 stand-in, 64-trial database: 46.1 vs 34.4 ms. Shapes on the table's grid reuse the profile's
    # records anyway.
    transplant: bool = False
    # the convolutions' data layout: NCHW, NCHWc (blocked by the device's channel step) or NCHW<x>c, blocked
    # where the channels divide the block (`concrete`, tvmx/layout.py); it decides which kernels the latency table
    # measures and compile ships, so changing it means profiling again. NCHWc by default: at the default 32
    # profile trials, interleaved with ONNX Runtime at 1 thread, it cut TVM/ORT on resnet20 from 1.72 (NCHW) to
    # 1.25 and on a 1x28x28 depthwise-separable model from 1.69 to 1.42 (bench/results/runtime.md); a GPU
    # target resolves it to NCHW. A family whose widths the block divides only in part is anchored per kernel
    # kind (profiling/grid.py), so every width of a pruned network is profiled.
    layout: str = DEVICE_BLOCK

    def __post_init__(self) -> None:
        # the same value comes from a profile's [tuning] table or from a command's flag: the error names both
        for name, low, flag in (
            ("trials", 0, " (--trials)"),
            ("profile_trials", 1, ""),
            ("max_trials", 1, ""),
            ("population", 2, ""),
        ):
            value = getattr(self, name)
            if value is not None and value < low:
                raise EdgepruneError(f"tuning.{name}{flag} must be at least {low}, got {value}")
        if self.minutes is not None and not self.minutes > 0:
            raise EdgepruneError(f"tuning.minutes (--tuning-minutes) must be positive, got {self.minutes}")
        for name, allowed in (
            ("strategy", STRATEGIES),
            ("cost_model", COST_MODELS),
            ("task_scheduler", TASK_SCHEDULERS),
        ):
            if getattr(self, name) not in allowed:
                raise EdgepruneError(f"tuning.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        block_of(concrete(self.layout, "llvm", 1))  # raises on a malformed layout
        if not self.ops or not all(isinstance(op, str) and op for op in self.ops):
            raise EdgepruneError(f"tuning.ops must be a non-empty list of op names (or ['all']), got {self.ops!r}")

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> TuningConfig:
        """From a profile's `[tuning]` table (types checked by the caller, which names the file)."""
        unknown = set(table) - set(cls.keys())
        if unknown:
            raise EdgepruneError(f"unknown tuning key(s) {', '.join(sorted(unknown))}")
        values = dict(table)
        if "ops" in values:
            values["ops"] = tuple(values["ops"])
        if isinstance(values.get("minutes"), int):
            values["minutes"] = float(values["minutes"])
        return cls(**values)

    @classmethod
    def keys(cls) -> dict[str, tuple[type, ...]]:
        """The `[tuning]` table's keys and the TOML types each accepts."""
        counts = ("trials", "profile_trials", "max_trials", "population")
        types: dict[str, tuple[type, ...]] = {name: (int,) for name in counts}
        types |= {"minutes": (int, float), "transplant": (bool,), "ops": (list,)}
        types |= {name: (str,) for name in ("strategy", "cost_model", "task_scheduler", "layout")}
        assert set(types) == {f.name for f in fields(cls)}, "every field has a TOML type"
        return types

    def with_changes(self, **changes: Any) -> TuningConfig:
        """This config with a command's flags where given (None: keep the profile's value)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def for_profile(self) -> TuningConfig:
        """The profile's run: its deeper budget, and every task tuned on its own shape (these records are
        the anchors later compiles transplant from, so they are not transplants themselves)."""
        return replace(self, trials=self.profile_trials, transplant=False)

    def tunes(self, task_name: str) -> bool:
        """Whether a task of this name is tuned (others keep the default schedule)."""
        return ALL_OPS in self.ops or any(op in task_name for op in self.ops)

    def conv_layout(self, target: dict[str, Any], channel_step: int) -> str:
        """The layout the convolutions are compiled in for a device's TVM target and channel step (the one
        place `NCHWc` is resolved: the table's entries, the profiled network and compile all ask here)."""
        return concrete(self.layout, str(target.get("kind")), channel_step)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ops": list(self.ops)}


def concrete(layout: str, target_kind: str, channel_step: int) -> str:
    """A `tuning.layout` setting for a device: "NCHWc" becomes NCHW<the device's channel step>c on a CPU (an
    LLVM target), so a pruned network, whose widths sit on that grid, keeps every convolution blocked; a GPU
    keeps NCHW (the blocked layout is a SIMD register's, unmeasured on GPUs)."""
    if layout != DEVICE_BLOCK:
        return layout
    return f"NCHW{channel_step}c" if target_kind == "llvm" else PLAIN


def block_of(layout: str) -> int | None:
    """The channel block of a concrete layout ("NCHW8c" -> 8; "NCHW" -> None); raises on anything else."""
    if layout == PLAIN:
        return None
    match = _BLOCKED.fullmatch(layout)
    if match is None:
        raise EdgepruneError(
            f"tuning.layout must be NCHW, NCHWc (blocked by the device's channel step) or NCHW<block>c (e.g. "
            f"NCHW8c), got {layout!r}"
        )
    return int(match.group(1))
