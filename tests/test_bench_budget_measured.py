"""The budget-measured benchmark's own pieces: reading a loop's folder back and the table it writes (the runs
themselves are a timing tool, run by hand on a quiet machine)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(TOOLS))  # the tool imports its sibling bench_pruning, as a script would
    module = importlib.import_module("bench_budget_measured")
    yield module
    sys.modules.pop("bench_budget_measured", None)


def _verify(ratio: float, baseline_ms: float, target_ms: float, verdict: str, folder: Path = Path("-")) -> dict:
    """A verify.json as `verify_artifact` writes it for a relative 0.5x target (the keys the tool reads), for
    the artifact in `folder`."""
    return {
        "artifact": str(folder),
        "measured_ms": ratio * baseline_ms,
        "target_ms": target_ms,
        "target_ratio": 0.5,
        "verdict": verdict,
        "ratio": {"estimate": ratio, "low": ratio * 0.99, "high": ratio * 1.01, "level": 0.95, "samples": 20},
        "interval": {"estimate": 2.0, "low": 1.98, "high": 2.02, "level": 0.95, "samples": 40},
        "baseline_ms": baseline_ms,
        "verified_at": "2026-12-08T01:00:00+0000",
    }


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _artifact(folder: Path, library: bytes, verified: dict) -> None:
    """An artifact folder with its manifest, library and verify.json."""
    _write(folder / "manifest.json", {"library": "model.so"})
    (folder / "model.so").write_bytes(library)
    _write(folder / "verify.json", verified | {"artifact": str(folder)})


def _run_folder(work: Path, again: float | None) -> None:
    """A finished run: reference 2.0 ms, a missing round 1, a kept round 2 at ratio 0.49; optionally re-measured
    (a copy of round 2's library)."""
    run = work / "run"
    _write(run / "original" / "verify.json", _verify(1.0, 2.0, 1.0, "MEETS") | {"measured_ms": 2.0})
    _artifact(run / "round-1" / "artifacts", b"one", _verify(0.55, 2.1, 1.0, "MISSES"))
    _artifact(run / "round-2" / "artifacts", b"two", _verify(0.49, 1.9, 1.0, "MEETS"))
    details = [{"round": 1, "target_ms": 1.0, "scale": 1.0}, {"round": 2, "target_ms": 1.0, "scale": 1.2}]
    _write(run / "summary.json", {"chosen_round": 2, "stopped": "meets", "rounds": 2, "round_details": details})
    if again is not None:
        _artifact(work / "reverify" / "run-0.5x", b"two", _verify(again, 2.0, 1.0, "MEETS"))


def test_a_finished_run_is_read_back_with_its_fixed_target_and_its_second_measurement(
    bench: ModuleType, tmp_path: Path
) -> None:
    _run_folder(tmp_path, again=0.495)
    record = bench.loop_record(tmp_path, *bench.loops(tmp_path, ["0.5x"])[0])
    assert [r["round"] for r in record["rounds"]] == [1, 2]
    assert record["reference"]["ms"] == 2.0
    assert bench.kept(record)["used"] == pytest.approx(0.98)
    assert {r["target_ms"] for r in record["rounds"]} == {1.0}
    assert record["again"]["ratio"] == 0.495
    (same,) = bench.same_networks([record]).values()  # round 2 and its re-verification: one library
    assert [row["ratio"] for _, row in same] == [0.49, 0.495]


def test_the_goals_say_no_when_a_target_is_underused_or_two_measurements_disagree(
    bench: ModuleType, tmp_path: Path
) -> None:
    _run_folder(tmp_path, again=0.40)  # 18% below the first measurement of the same network
    record = bench.loop_record(tmp_path, *bench.loops(tmp_path, ["0.5x"])[0])
    unfinished = bench.loop_record(tmp_path, *bench.loops(tmp_path, ["0.3x"])[1])
    lines = bench.goal_lines([record, unfinished])
    assert "within 2%: NO: 0 of 1 networks (spreads 22.50%" in lines[1]
    assert "98.0% of their targets" in lines[2] and "; 1 of 2 loops finished" in lines[2]
    assert "every one meets: yes (1 of 1 on the median ratio, 1 with the whole 95% interval" in lines[2]
    record["rounds"][1]["used"] = 0.9
    assert "goal >= 97%: NO" in bench.goal_lines([record])[2]
    missed = {"rounds": [{"round": 1, "used": 1.3, "verdict": "MISSES"}], "chosen_round": 1}
    use = bench.budget_use([record, missed])  # a miss does not lift the mean: it is counted as a miss
    assert use["mean_used"] == pytest.approx(0.9) and (use["meet"], use["sure"], use["finished"]) == (1, 1, 2)


def test_the_table_marks_the_kept_round_the_second_measurement_and_what_is_not_measured_yet(
    bench: ModuleType, tmp_path: Path
) -> None:
    _run_folder(tmp_path, again=0.495)
    result = {
        "label": "test",
        "model": "resnet20",
        "data": "digits",
        "targets": ["0.3x"],
        "loops": [bench.loop_record(tmp_path, *loop) for loop in bench.loops(tmp_path, ["0.3x"])],
        "notes": [],
        "calls": [
            {
                "started": "01:10:00",
                "ended": "01:39:00",
                "seconds": 1740,
                "load_start": [1, 1, 1],
                "load_end": [2, 2, 2],
                "finished": False,
            }
        ],
    }
    text = bench.markdown(result)
    assert (
        "| run 0.5x | 2 (kept) | 1.200 | 0.4900 (0.4851-0.4949) | 1.0% | 20 | 0.5 | 1.0000 | 98.0% | MEETS | 1.9000 |"
        in text
    )
    assert "| run 0.5x | again | - | 0.4950" in text
    assert f"| {bench.library_digest(tmp_path / 'run' / 'round-2' / 'artifacts')} | run 0.5x again | 0.4950" in text
    assert "| sweep 0.3x | - | not measured yet |" in text
    assert "- 01:10:00 to 01:39:00 UTC (1740 s), load [1, 1, 1] -> [2, 2, 2]: interrupted" in text
    assert "| run 0.5x | 2.0000 (1.9800-2.0200, 40) | 1.0000 | 0.0% | 1.9000-2.1000 | 10.5% |" in text


def test_an_interrupted_call_is_recorded_as_such(bench: ModuleType, tmp_path: Path) -> None:
    def stopped() -> None:
        raise KeyboardInterrupt

    bench.measuring(tmp_path, lambda: None)
    with pytest.raises(KeyboardInterrupt):
        bench.measuring(tmp_path, stopped)
    calls = json.loads((tmp_path / bench.CALLS).read_text())
    assert [c["finished"] for c in calls] == [True, False]
    assert all(len(c["load_start"]) == len(c["load_end"]) == 3 for c in calls)
