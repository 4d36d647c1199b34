"""The report pages, from synthetic summaries (rendering only: no device, no pruning), and one real browser.

The screenshot test opens a sweep report in headless Chromium (Debian's `chromium`, `make system-packages`) and
checks that the PNG it takes is a real, non-blank page; it skips without Chromium, except under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgeprune.report.build import write_report, write_sweep_report

ORT = {"ort_ms": 0.41, "ort_spread_ms": 0.02, "ort_threads": 2}


def rounds(target_ms: float, measured: list[float]) -> list[dict[str, Any]]:
    out = []
    for index, ms in enumerate(measured, 1):
        meets = ms <= target_ms
        correction = None if meets else 1.1 * index
        out.append(
            {
                "round": index,
                "scale": 1.0 if index == 1 else 1.1 * (index - 1),
                "predicted_ms": ms * 0.9,
                "measured_ms": ms,
                "spread_ms": 0.01,
                "baseline_ms": 2.1,
                "target_ms": target_ms,
                "meets_target": meets,
                "correction": correction,
                "accuracy": 0.99 - 0.001 * index,
                "chosen": index == len(measured),
            }
        )
    return out


def sweep_summary(folder: Path) -> dict[str, Any]:
    points = []
    for target, ms, accuracy in (("0.8x", 1.6, 0.991), ("0.6x", 1.22, 0.987), ("0.4x", 0.83, 0.962)):
        target_ms = float(target[:-1]) * 2.1
        history = rounds(target_ms, [ms * 1.08, ms] if target == "0.6x" else [ms])
        points.append(
            {
                "target": target,
                "target_ms": target_ms,
                "measured_ms": ms,
                "spread_ms": 0.015,
                "baseline_ms": 2.1,
                "meets_target": ms <= target_ms,
                "speedup": 2.1 / ms,
                "predicted_ms": ms * 0.9,
                "accuracy": accuracy,
                "flops": int(40e6 * ms / 2.1),
                "params": int(270e3 * ms / 2.1),
                "artifacts": str(folder / f"target-{target}" / "round-1" / "artifacts"),
                "rounds": history,
            }
        )
    points.append(
        {
            "target": "0.05x",
            "target_ms": 0.105,
            "unreachable": "target 0.105 ms is below the smallest reachable 0.31 ms",
        }
    )
    return {
        "sweep_dir": str(folder),
        "model": "resnet20",
        "device": "local",
        "timings_are_real": True,
        "method": "legr",
        "search": {"file": str(folder / "learned-legr.json"), "evaluations": 52, "seconds": 90.2},
        "original": {
            "measured_ms": 2.1,
            "spread_ms": 0.02,
            "predicted_ms": 2.0,
            "accuracy": 0.9926,
            "flops": 40_000_000,
            "params": 270_000,
            **ORT,
        },
        "points": points,
        "seconds": 512.3,
    }


def run_summary(folder: Path) -> dict[str, Any]:
    history = rounds(1.05, [1.2, 1.01])
    for side in ("original", "round-2/artifacts"):
        (folder / side).mkdir(parents=True)
    original = {"measured_ms": 2.1, "predicted_ms": 2.0, "accuracy": 0.9926, "flops": 40_000_000, "params": 270_000}
    return {
        "run_dir": str(folder),
        "model": "resnet20",
        "device": "local",
        "timings_are_real": True,
        "target_ms": 1.05,
        "meets_target": True,
        "speedup": 2.08,
        "rounds": 2,
        "chosen_round": 2,
        "stopped": "round 2 meets the target with 96% of it used",
        "round_details": history,
        "original": {**original, "artifact_bytes": 400_000},
        "pruned": {"measured_ms": 1.01, "predicted_ms": 0.9, "accuracy": 0.9907, "flops": 19_000_000,
                   "params": 120_000, "artifact_bytes": 300_000},
        "seconds": 301.0,
    }  # fmt: skip


def with_ort(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary of a run that measured ONNX Runtime beside TVM (its sides carry verify.json's ORT keys)."""
    summary["original"] |= {**ORT, "ort_ms": 0.42}
    summary["pruned"] |= {**ORT, "ort_ms": 0.202}
    return summary


def test_a_run_report_shows_percentages_rounds_and_the_onnx_runtime_line(tmp_path: Path) -> None:
    page = write_report(tmp_path, with_ort(run_summary(tmp_path))).read_text()
    assert "99.26%" in page and "99.07%" in page and "0.9926" not in page
    assert "ONNX Runtime, same ONNX file, 2 threads" in page and "0.420 ms" in page and "0.202 ms" in page
    assert "Rounds of the closed loop" in page and page.count("x1.100") >= 1
    assert "<b>kept</b>" in page and "98.80%" in page and "Stopped: round 2 meets" in page
    assert "predicted_vs_measured.png" in page and (tmp_path / "predicted_vs_measured.png").stat().st_size > 5000


def test_a_run_report_plots_the_search_of_round_one_when_a_later_round_is_kept(tmp_path: Path) -> None:
    summary = run_summary(tmp_path)  # round 2 kept; only round 1 searched
    tried = [{"predicted_ms": 0.8 + 0.01 * i, "val_loss": 0.5 - 0.01 * i} for i in range(12)]
    (tmp_path / "round-1" / "prune.json").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "round-1" / "prune.json").write_text(json.dumps({"search_candidates": tried}))
    (tmp_path / "round-2" / "prune.json").write_text(json.dumps({"layers": []}))
    assert "candidates.png" in write_report(tmp_path, summary).read_text()
    assert (tmp_path / "candidates.png").stat().st_size > 5000


def test_a_run_report_without_onnx_runtime_has_no_such_line(tmp_path: Path) -> None:
    assert "ONNX Runtime" not in write_report(tmp_path, run_summary(tmp_path)).read_text()


def test_a_sweep_report_has_the_table_and_the_pareto_plot(tmp_path: Path) -> None:
    page = write_sweep_report(tmp_path, sweep_summary(tmp_path)).read_text()
    assert "pareto.png" in page and (tmp_path / "pareto.png").stat().st_size > 10_000
    assert page.index("pareto.png") < page.index("predicted_vs_measured.png")  # the plot people came for first
    for text in ("99.26%", "96.20%", "0.8x", "0.4x", "smallest reachable", "3 of 4 targets met", "52 candidates"):
        assert text in page, text
    assert "ONNX Runtime, same ONNX file, 2 threads" in page
    assert page.count("<h3>Target") == 3  # the rounds of each measured target


def chromium() -> str | None:
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


def screenshot(report: Path, shot: Path) -> Path:
    """A 1280x2000 PNG of the page as headless Chromium draws it (skips without Chromium, except under CI)."""
    browser = chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no chromium: `make system-packages` installs it (Debian package chromium)")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium, or make system-packages as root)")
    # --no-sandbox: Chromium refuses to run as root with its sandbox (containers, CI); the page is our own file
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
         "--window-size=1280,2000", "--virtual-time-budget=5000", report.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return shot


def test_a_sweep_report_renders_in_a_real_browser(tmp_path: Path) -> None:
    """Headless Chromium takes a screenshot of the page: a real PNG of the window's size, not blank."""
    from PIL import Image, ImageStat

    shot = screenshot(write_sweep_report(tmp_path, sweep_summary(tmp_path)), tmp_path / "shot.png")
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1280, 2000)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 200, f"{len(colours)} colours: a blank or unstyled page"
        assert max(ImageStat.Stat(rgb).stddev) > 20  # text and plots on white, not one flat colour
        # the Pareto plot (its blue front, green and grey markers) was drawn: loaded images, not broken icons
        assert sum(n for n, (r, g, b) in colours if g > 100 and r < 80 and b < 80) > 50


def test_a_run_report_shows_onnx_runtime_beside_tvm_in_a_real_browser(tmp_path: Path) -> None:
    """The run page as a browser draws it: the latency chart has ONNX Runtime's bars (purple) for the original
    and the pruned model beside TVM's (blue), and the table its ORT row. The PNG is kept beside the report
    (`shot.png`), so a person can look at it."""
    from PIL import Image

    report = write_report(tmp_path, with_ort(run_summary(tmp_path)))
    page = report.read_text()
    assert page.index("latency.png") < page.index("predicted_vs_measured.png")  # the comparison comes first
    with Image.open(tmp_path / "latency.png") as chart:
        colours = chart.convert("RGB").getcolors(maxcolors=1 << 20) or []
        purple = sum(n for n, rgb in colours if rgb == (0x8E, 0x44, 0xAD))
        blue = sum(n for n, rgb in colours if rgb == (0x2F, 0x6D, 0xB5))
    # four bars: TVM original 2.1 ms and pruned 1.01, ORT 0.42 and 0.202 (a fifth of each), one height each
    assert blue > 0 and purple > 0 and purple / blue == pytest.approx((0.42 + 0.202) / (2.1 + 1.01), rel=0.15)
    with Image.open(screenshot(report, tmp_path / "shot.png")) as image:
        drawn = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
        # the chart is on the page (a loaded image, not a broken icon): its purple ORT bars are there
        assert sum(n for n, rgb in drawn if rgb == (0x8E, 0x44, 0xAD)) >= 0.9 * purple  # drawn at its own size


def terminal(summary: dict[str, Any]) -> str:
    """`run`'s closing lines (what the demo prints) as the terminal shows them."""
    from rich.console import Console

    from edgeprune.cli.pipeline import _lines

    console = Console(width=120, record=True)
    for line in _lines(summary):
        console.print(line)
    return console.export_text()


def test_the_run_terminal_table_shows_onnx_runtime_beside_tvm(tmp_path: Path) -> None:
    """The closing table has the report's ORT row, under TVM's measured latency; none without a measurement."""
    rows = terminal(with_ort(run_summary(tmp_path))).splitlines()
    measured = next(i for i, row in enumerate(rows) if "measured latency" in row)
    assert "ONNX Runtime, same ONNX file, 2 threads" in rows[measured + 1]
    assert "0.420 ms" in rows[measured + 1] and "0.202 ms" in rows[measured + 1]
    assert "ONNX Runtime" not in terminal(run_summary(tmp_path / "without"))


def test_a_run_report_says_the_verdict_and_the_reference_it_was_judged_from(tmp_path: Path) -> None:
    summary = run_summary(tmp_path)
    summary["verdict"] = "MEETS"
    summary["reference"] = {
        "measured_ms": 2.1,
        "interval": {"estimate": 2.1, "low": 2.08, "high": 2.13, "level": 0.95, "samples": 30},
        "precision_goal": 0.01,
        "precision": 0.0119,
    }
    summary["round_details"][0].update(verdict="TOO CLOSE TO CALL", target_ratio=0.5, ratio=0.512)
    page = write_report(tmp_path, summary).read_text()
    assert "(MEETS at 95%)" in page and "TOO CLOSE TO CALL, ratio 0.512" in page
    assert "95% interval 2.080-2.130 ms, 30 samples, &plusmn;1.2% for a goal of &plusmn;1%" in page


def test_a_report_warns_of_the_boards_health_during_the_measurements(tmp_path: Path) -> None:
    summary = run_summary(tmp_path)
    summary["health_warnings"] = ["CPU governor ondemand scales the clock with load", "throttle flags set (0x50005)"]
    page = write_report(tmp_path, summary).read_text()
    assert "Board health during the measurements" in page and "throttle flags set (0x50005)" in page
    sweep = sweep_summary(tmp_path / "sweep")
    assert "Board health" not in write_sweep_report(tmp_path / "sweep", sweep).read_text()
    sweep["health_warnings"] = ["running hot: thermal_zone0 (cpu-thermal) 82 °C"]
    assert "82 °C" in write_sweep_report(tmp_path / "sweep", sweep).read_text()
