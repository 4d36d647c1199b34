"""The verdict's interval (fast tier): its coverage on known distributions (seeded), the paired ratio that load
hitting both networks alike cancels in, and the verdict's three answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgeprune.confidence import (
    LEVEL,
    MEETS,
    MISSES,
    TOO_CLOSE,
    Interval,
    coverage,
    median_interval,
    rank,
    ratio_interval,
    samples_for,
    verdict,
)
from edgeprune.devices.timing import Timing
from edgeprune.verify.defaults import MORE_SAMPLES
from edgeprune.verify.verifier import VerifyResult, sample_until


@pytest.mark.parametrize("n", [6, 10, 20, 40])
def test_the_median_interval_covers_a_skewed_distributions_median_as_often_as_it_says(n: int) -> None:
    rng = np.random.default_rng(0)
    true_median = 2.0  # lognormal(log 2, 0.3): skewed like a latency, median exactly 2
    trials = 4000
    covered = 0
    for _ in range(trials):
        interval = median_interval(list(rng.lognormal(np.log(true_median), 0.3, n)))
        covered += interval.low <= true_median <= interval.high
    exact = coverage(n)
    assert exact >= LEVEL
    # the observed share is the exact coverage within 3 binomial standard errors (and so at least ~95%)
    assert abs(covered / trials - exact) < 3 * np.sqrt(exact * (1 - exact) / trials)


def test_the_paired_ratio_cancels_load_that_hits_both_and_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(1)
    trials, n, ratio = 2000, 12, 0.5
    covered, paired, alone = 0, [], []
    for _ in range(trials):
        load = rng.uniform(1.0, 1.6, n)  # the machine's load drifts; each pair shares one moment
        baseline = 2.0 * load * rng.lognormal(0, 0.02, n)
        pruned = ratio * 2.0 * load * rng.lognormal(0, 0.02, n)
        interval = ratio_interval(list(pruned), list(baseline))
        covered += interval.low <= ratio <= interval.high
        paired.append(interval.half_width)
        alone.append(median_interval(list(pruned)).half_width)
    # the load's 60% swing widens the pruned network's own interval; in the paired ratio it cancels
    assert np.mean(paired) < np.mean(alone) / 3
    assert covered / trials >= LEVEL - 3 * np.sqrt(LEVEL * (1 - LEVEL) / trials)


def test_ranks_follow_the_binomial() -> None:
    assert rank(5) is None and rank(6) == 1 and rank(10) == 2 and rank(20) == 6
    assert coverage(10) == pytest.approx(1 - 2 * 11 / 1024)
    few = median_interval([1.0, 3.0, 2.0])
    assert (few.low, few.estimate, few.high) == (1.0, 2.0, 3.0) and few.level == pytest.approx(0.75)
    with pytest.raises(ValueError, match="paired"):
        ratio_interval([1.0], [1.0, 2.0])


def test_the_verdict_has_three_answers() -> None:
    interval = Interval(estimate=1.0, low=0.98, high=1.03, level=LEVEL, samples=10)
    assert verdict(interval, 1.05) == MEETS
    assert verdict(interval, 0.95) == MISSES
    assert verdict(interval, 1.0) == TOO_CLOSE  # the target lies inside the interval
    assert interval.upper_margin == pytest.approx(0.03) and interval.half_width == pytest.approx(0.025)


def test_samples_for_a_precision_grow_with_the_spread() -> None:
    assert samples_for(0.001, 0.01) == 6  # a quiet device: the fewest an interval can have
    noisy, quiet = samples_for(0.05, 0.01), samples_for(0.02, 0.01)
    assert noisy > quiet > 6 and noisy == pytest.approx(quiet * 6.25, rel=0.1)


@dataclass
class Scripted:
    """A sampler (as `time_evaluator` is one) that returns the next of its scripted ms values on each call."""

    values: list[float]
    number: int = 1
    calls: int = 0

    def samples_ms(self) -> list[float]:
        self.calls += 1
        return [self.values[(self.calls - 1) % len(self.values)]]


def judged_by(target: float) -> Callable[[dict[str, list[float]]], bool]:
    return lambda samples: verdict(median_interval(samples["artifact"]), target) != TOO_CLOSE


def test_a_clear_verdict_stops_at_the_first_batch_and_a_close_one_samples_up_to_the_cap() -> None:
    clear = {"artifact": Scripted([1.0, 1.02, 0.98]), "baseline": Scripted([2.0])}
    samples = sample_until(clear, 10, judged_by(1.5))
    assert len(samples["artifact"]) == len(samples["baseline"]) == 10  # taken in pairs
    close = {"artifact": Scripted([0.9, 1.1]), "baseline": Scripted([2.0])}  # the target 1.0 sits in the middle
    samples = sample_until(close, 10, judged_by(1.0))
    assert len(samples["artifact"]) == MORE_SAMPLES * 10 and close["artifact"].calls == MORE_SAMPLES * 10
    assert verdict(median_interval(samples["artifact"]), 1.0) == TOO_CLOSE
    settles = {"artifact": Scripted([0.8, 1.0] * 5 + [0.5] * 30)}  # a noisy first batch, then quiet: settles
    assert len(sample_until(settles, 10, judged_by(0.9))["artifact"]) == 20


def result_with(samples: list[float], baseline: list[float], **target: float) -> VerifyResult:
    return VerifyResult(
        artifact=Path("a"),
        device="fake",
        timing=Timing.from_samples(samples, 1),
        max_abs_diff=0.0,
        outputs_match=True,
        target_ms=target.get("target_ms"),
        target_source="test",
        interval=median_interval(samples),
        ratio=ratio_interval(samples, baseline),
        target_ratio=target.get("target_ratio"),
    )


def test_a_relative_target_is_judged_on_the_paired_ratio_an_absolute_one_on_the_ms() -> None:
    # the machine slowed down 50% halfway: the ms scatter widely, each pair's ratio stays 0.5
    baseline = [2.0] * 6 + [3.0] * 6
    pruned = [b * 0.5 for b in baseline]
    relative = result_with(pruned, baseline, target_ratio=0.55, target_ms=1.1)
    assert relative.verdict == MEETS and relative.meets_target
    assert result_with(pruned, baseline, target_ratio=0.45, target_ms=1.1).verdict == MISSES
    absolute = result_with(pruned, baseline, target_ms=1.3)  # 1.0..1.5 ms: the target sits inside
    assert absolute.verdict == TOO_CLOSE and absolute.meets_target
    saved = relative.to_json()
    assert saved["verdict"] == MEETS and saved["ratio"]["estimate"] == pytest.approx(0.5)
    assert saved["interval"]["samples"] == 12 and saved["target_ratio"] == 0.55
    assert result_with(pruned, baseline).verdict is None  # no target, no verdict


def test_the_stability_tools_page_says_whether_verdicts_flipped() -> None:
    import importlib.util

    tool = Path(__file__).resolve().parents[1] / "tools" / "verify_stability.py"
    spec = importlib.util.spec_from_file_location("verify_stability", tool)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    interval = Interval(0.70, 0.69, 0.71, LEVEL, 20).to_json()
    runs = [
        {"before_ratio": r, "before": b, "after": a, "after_interval": interval, "samples": 20}
        for r, b, a in ((0.70, MEETS, MEETS), (0.72, MISSES, TOO_CLOSE), (0.69, MEETS, MEETS))
    ]
    measured = [{"median_ms": m, "half_width": 0.01, "samples": 10} for m in (2.0, 2.2)]
    refs = {"before": measured, "after": measured}
    page = module.markdown(
        {"label": "test", "device": "local", "repeat": 10, "target_ratio": 0.71, "runs": runs, "references": refs,
         "seconds": 1.0}
    )  # fmt: skip
    assert "Machine: **test**" in page and "2 MEETS, 1 MISSES: the verdict flipped" in page
    assert "2 MEETS, 0 MISSES, 1 TOO CLOSE TO CALL: the decided verdicts never flip" in page
    assert "| 2.0000-2.2000 | 9.5% |" in page
