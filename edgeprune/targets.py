"""Budgets as the user writes them: '12.5' ms, '0.5x' of the unpruned latency, '1.2M' FLOPs, '50%' or 0.5 of the
original params.

A leaf module: pruning binds a target to a model, verify and the pipeline only check one, and neither should
import the other for that.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from edgeprune.errors import EdgepruneError

KINDS = ("ms", "flops", "params")
OPTION = {"ms": "--target-ms", "flops": "--target-flops", "params": "--target-params"}
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_UNIT = {"ms": "milliseconds", "flops": "FLOPs (MACs)", "params": "parameters"}


@dataclass(frozen=True)
class Target:
    """A budget as the user gave it; `relative` targets are a fraction of the unpruned model's cost."""

    kind: str
    value: float
    relative: bool = False

    def resolve(self, original: float) -> float:
        return self.value * original if self.relative else self.value

    def describe(self) -> str:
        return f"{self.value:.0%} of the original {self.kind}" if self.relative else format_cost(self.kind, self.value)


def parse_target(kind: str, text: str | float) -> Target:
    """'12.5' ms; FLOPs / params as '1.2M', '350k', '4e6', or '50%' of the original.

    A FLOPs or params count below 1 is a fraction of the original (0.5 is '50%'): no model has half a FLOP,
    and a user who writes 0.5 means half of it."""
    raw = str(text).strip().lower()
    option = OPTION[kind]
    if kind != "ms" and raw.endswith("%"):
        try:
            share = float(raw[:-1]) / 100.0
        except ValueError:
            share = -1.0
        if not 0.0 < share <= 1.0:
            raise EdgepruneError(f"{option} {text}: a percentage must be in (0, 100]")
        return Target(kind, share, relative=True)
    # a sign is part of the number: '-1' is a number, just not a budget, and the error should say that
    match = re.fullmatch(r"([+-]?[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmg]?)", raw)
    if kind == "ms" and match and match.group(2):
        match = None
    example = "12.5" if kind == "ms" else "1.5M, 300k, 50% or 0.5"
    if not match:
        raise EdgepruneError(
            f"{option} '{text}' is not a number: a target must be a positive number of {_UNIT[kind]}",
            hint=f"e.g. {option} {example}",
        )
    value = float(match.group(1)) * _SUFFIX[match.group(2)]
    if value <= 0 or not math.isfinite(value):
        raise EdgepruneError(
            f"{option} {text}: a target must be a positive number of {_UNIT[kind]}", hint=f"e.g. {option} {example}"
        )
    if kind != "ms" and value < 1.0:
        return Target(kind, value, relative=True)
    return Target(kind, value)


def parse_relative(text: str) -> float:
    """'0.5x': a fraction of the unpruned model's measured latency, in (0, 1) (`--target` of run, sweep, verify)."""
    raw = str(text).strip()
    try:
        value = parse_target("ms", raw.removesuffix("x")).value if raw.endswith("x") else None
    except EdgepruneError:
        value = None
    if value is None:
        raise EdgepruneError(
            f"--target {text}: a relative target must be a positive number below 1 followed by x, like 0.5x "
            "(a fraction of the unpruned latency)"
        )
    if value >= 1:
        raise EdgepruneError(f"--target {text}: a relative target must be below 1x")
    return value


def format_cost(kind: str, value: float | None) -> str:
    if value is None:
        return "-"
    if kind == "ms":
        return f"{value:.3f} ms"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{suffix} {kind}"
    return f"{value:.0f} {kind}"
