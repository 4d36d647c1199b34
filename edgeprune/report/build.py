"""Assemble a run folder's report: the plots from the stages' JSON outputs, and `report.html` beside them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from edgeprune.report import html, plots


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _lut_grid(lut_file: Path) -> tuple[str, list[int], list[int], list[list[float]]] | None:
    """The layer family with the most measured entries, as an (in-channels x out-channels) grid of ms."""
    from edgeprune.profiling.lut import split_key

    table = _json(lut_file)
    if not table or not table.get("entries"):
        return None
    families: dict[str, dict[tuple[int, int], float]] = {}
    for key, entry in table["entries"].items():
        family, cin, cout = split_key(key)
        families.setdefault(family, {})[(cin, cout)] = float(entry["median_ms"])
    family, points = max(families.items(), key=lambda item: len(item[1]))
    ins = sorted({c for c, _ in points})
    outs = sorted({c for _, c in points})
    grid = [[points.get((i, o), math.nan) for o in outs] for i in ins]
    return family, ins, outs, grid


def _lut_figure(lut_file: Path | None, folder: Path) -> list[html.Figure]:
    grid = _lut_grid(lut_file) if lut_file is not None else None
    if grid is None:
        return []
    family, ins, outs, values = grid
    plots.lut_heatmap(family, ins, outs, values, folder / "lut_heatmap.png")
    return [("LUT of one layer", "lut_heatmap.png", f"measured latency over the channel grid: {family}")]


def _predicted_figure(points: list[dict[str, Any]], folder: Path) -> list[html.Figure]:
    points = [p for p in points if p.get("predicted_ms") is not None and p.get("measured_ms") is not None]
    if not points:
        return []
    plots.predicted_vs_measured(points, folder / "predicted_vs_measured.png")
    caption = "the latency table against the device, per compiled network (the diagonal is a perfect table)"
    return [("Predicted vs measured", "predicted_vs_measured.png", caption)]


def _latency_figure(summary: dict[str, Any], ort: dict[str, dict[str, Any]], folder: Path) -> list[html.Figure]:
    """TVM's measured latency of both networks, and ONNX Runtime's on the same ONNX files when it was measured."""
    kept = next((r for r in summary.get("round_details", []) if r.get("chosen")), {})
    bars = [("original, TVM", summary["original"].get("measured_ms"), None)]
    bars.append(("pruned, TVM", summary["pruned"].get("measured_ms"), kept.get("spread_ms")))
    threads = next((side["ort_threads"] for side in ort.values() if side.get("ort_threads")), None)
    bars += [
        (f"{side}, ONNX Runtime ({html.thread_count(threads)})", ort[side]["ort_ms"], ort[side].get("ort_spread_ms"))
        for side in ("original", "pruned")
        if "ort_ms" in ort[side]
    ]
    bars = [bar for bar in bars if bar[1] is not None]
    if not bars:
        return []
    plots.latency_bars(bars, folder / "latency.png", summary.get("target_ms"))
    caption = "median of the device's timing and its spread" + (f"; {html.ort_label(threads)}" if threads else "")
    return [("Latency", "latency.png", caption)]


def write_report(folder: Path, summary: dict[str, Any], lut_file: Path | None = None) -> Path:
    """Write the PNGs and `report.html` into the run folder; returns the report's path."""
    figures: list[html.Figure] = []
    kept = f"round-{summary['chosen_round']}"  # the most accurate round that meets the target
    prune = _json(folder / kept / "prune.json") or {}
    if prune.get("layers"):
        plots.channels(prune["layers"], folder / "channels.png")
        figures.append(("Channels per layer", "channels.png", "output channels of every conv/linear layer"))
    # the search runs in the first round only (later rounds reuse its ranking), whichever round is kept
    searched = _json(folder / "round-1" / "prune.json") or {}
    candidates = [c for c in searched.get("search_candidates", []) if c.get("predicted_ms") is not None]
    if candidates:
        plots.candidates(candidates, folder / "candidates.png", summary["target_ms"])
        figures.append(
            ("Search candidates", "candidates.png", "each (alpha, kappa) the evolution tried, pruned to the budget")
        )
    points = [{"label": "original", **summary["original"]}] + [
        {"label": f"round {r['round']}", "predicted_ms": r["predicted_ms"], "measured_ms": r["measured_ms"]}
        for r in summary["round_details"]
    ]
    figures += _predicted_figure(points, folder) + _lut_figure(lut_file, folder)
    # ONNX Runtime's figures, where it was measured, are in the summary's sides as verify.json had them
    ort = {side: {k: v for k, v in summary[side].items() if k.startswith("ort_")} for side in ("original", "pruned")}
    figures[:0] = _latency_figure(summary, ort, folder)
    return html.render(summary, figures, folder / "report.html", ort if any(ort.values()) else None)


def write_sweep_report(folder: Path, summary: dict[str, Any], lut_file: Path | None = None) -> Path:
    """A sweep's PNGs and `report.html`: the Pareto plot of accuracy against measured latency first."""
    original = summary["original"]
    measured = [p for p in summary["points"] if "unreachable" not in p]
    figures: list[html.Figure] = []
    pareto = [{"label": "unpruned", "meets": None, **original}] + [
        {"label": p["target"], "meets": p["meets_target"], **p} for p in measured
    ]
    pareto = [p for p in pareto if p.get("accuracy") is not None]
    if pareto:
        plots.pareto(pareto, folder / "pareto.png", original.get("ort_ms"))
        caption = "test accuracy against the latency measured on the device; the line joins the Pareto front"
        figures.append(("Accuracy vs measured latency", "pareto.png", caption))
    points = [{"label": "unpruned", **original}] + [{"label": p["target"], **p} for p in measured]
    figures += _predicted_figure(points, folder) + _lut_figure(lut_file, folder)
    return html.render_sweep(summary, figures, folder / "report.html")
