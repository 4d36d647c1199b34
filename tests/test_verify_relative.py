"""`verify --target 0.5x --baseline DIR` (fast tier): a relative target is judged on the paired ratio of artifact
to baseline samples and its interval, as the run's loop judges its rounds; the options a user can get wrong are
refused before anything is measured. No device is touched: the results are built from given samples (the real
measurement on the local farm is in test_verify)."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median

import pytest
from rich.console import Console

from edgeprune.cli.compiling import _verify_table
from edgeprune.confidence import MEETS, MISSES, TOO_CLOSE
from edgeprune.errors import EdgepruneError
from edgeprune.targets import parse_relative
from edgeprune.verify.verifier import VerifyResult, enough
from tests.test_confidence import result_with
from tests.test_verify import run_cli


def result(artifact: list[float], baseline: list[float], target_ratio: float) -> VerifyResult:
    """What verify returns for these paired samples (sample i of each taken one after the other)."""
    return result_with(artifact, baseline, target_ratio=target_ratio, target_ms=target_ratio * median(baseline))


# the baseline's samples wander with the machine's load (1.6-2.6 ms); the pruned network, measured beside each,
# wanders with them at 0.47 of it
LOADED = [1.6 + 0.05 * i for i in range(21)]
PAIRED = [0.47 * ms for ms in LOADED]


def test_a_relative_target_straddled_by_the_ratios_interval_is_too_close_to_call() -> None:
    assert result(PAIRED, LOADED, 0.5).verdict == MEETS and result(PAIRED, LOADED, 0.45).verdict == MISSES
    straddling = [ms * (0.47 if i % 2 else 0.53) for i, ms in enumerate(LOADED)]  # half above, half below
    close = result(straddling, LOADED, 0.5)
    assert close.ratio is not None and close.ratio.low < 0.5 < close.ratio.high and close.verdict == TOO_CLOSE
    saved = json.loads(json.dumps(close.to_json(), default=str))  # verify.json
    assert saved["verdict"] == TOO_CLOSE and saved["target_ratio"] == 0.5 and saved["ratio"]["samples"] == 21


def test_a_round_takes_samples_until_its_judged_interval_is_within_the_precision() -> None:
    wide = [ms * (0.40 if i % 2 else 0.46) for i, ms in enumerate(LOADED)]  # every ratio meets 0.5, +-7% apart
    samples = {"artifact": wide, "baseline": LOADED}
    assert enough(None, 0.5, None)(samples)  # the verdict is decided: MEETS
    assert not enough(None, 0.5, 0.01)(samples)  # but its interval reaches far above the median: more samples
    assert enough(None, 0.5, 0.01)({"artifact": PAIRED, "baseline": LOADED})  # paired, the load cancels
    # the reference (no target): the median's own interval, however the load moved it
    assert not enough(None, None, 0.01)({"artifact": LOADED}) and enough(None, None, 0.01)({"artifact": [1.0] * 10})


def test_the_table_says_the_ratio_its_interval_and_the_relative_target() -> None:
    console = Console(record=True, width=200)
    console.print(_verify_table(result(PAIRED, LOADED, 0.5), 1))
    text = console.export_text()
    assert "0.470 of the baseline (95% interval 0.470-0.470, 21 pairs measured in turn)" in text
    assert "0.5x of the baseline" in text and "MEETS, -6.0%" in text


def test_parse_relative_takes_what_run_and_sweep_take() -> None:
    assert parse_relative("0.5x") == 0.5 and parse_relative(" 0.25x") == 0.25
    for bad, said in (("0.5", "followed by x"), ("halfx", "followed by x"), ("-0.5x", "followed by x"),
                      ("1x", "below 1x"), ("1.5x", "below 1x")):  # fmt: skip
        with pytest.raises(EdgepruneError, match=said):
            parse_relative(bad)


def test_the_cli_refuses_a_relative_target_it_cannot_judge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nothing-here")  # refused before the artifact is read: nothing is measured
    code, _, err = run_cli(capsys, "verify", missing, "--device", "local", "--target", "0.5x")
    assert code == 2 and "fraction of the baseline's latency" in err and "--baseline DIR" in err
    code, _, err = run_cli(capsys, "verify", missing, "--device", "local", "--target", "1.5x", "--baseline", missing)
    assert code == 2 and "below 1x" in err
    both = ("--target", "0.5x", "--target-ms", "2", "--baseline", missing)
    code, _, err = run_cli(capsys, "verify", missing, "--device", "local", *both)
    assert code == 2 and "give one target" in err
    assert not (tmp_path / "nothing-here").exists() and not list(tmp_path.glob("**/verify.json"))


def test_the_api_reads_like_the_cli(tmp_path: Path) -> None:
    import edgeprune as ep

    with pytest.raises(EdgepruneError, match="give the baseline"):
        ep.verify(tmp_path, ep.device("local"), target="0.5x")
    with pytest.raises(EdgepruneError, match="followed by x"):
        ep.verify(tmp_path, ep.device("local"), target="0.5", baseline=tmp_path)
