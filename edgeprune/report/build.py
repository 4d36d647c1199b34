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


def write_report(folder: Path, summary: dict[str, Any], lut_file: Path | None = None) -> Path:
    """Write the PNGs and `report.html` into the run folder; returns the report's path."""
    figures: list[tuple[str, str, str]] = []
    prune = _json(folder / f"round-{summary['chosen_round']}" / "prune.json") or {}
    if prune.get("layers"):
        plots.channels(prune["layers"], folder / "channels.png")
        figures.append(("Channels per layer", "channels.png", "output channels of every conv/linear layer"))
    candidates = [c for c in prune.get("search_candidates", []) if c.get("predicted_ms") is not None]
    if candidates:
        plots.candidates(candidates, folder / "candidates.png", summary["target_ms"])
        figures.append(
            ("Search candidates", "candidates.png", "each (alpha, kappa) the evolution tried, pruned to the budget")
        )
    points = [{"label": "original", **summary["original"]}] + [
        {
            "label": f"round {r['round']}",
            "predicted_ms": r["predicted_ms"],
            "measured_ms": r["measured_ms"],
        }
        for r in summary["round_details"]
    ]
    points = [p for p in points if p.get("predicted_ms") is not None]
    if points:
        plots.predicted_vs_measured(points, folder / "predicted_vs_measured.png")
        figures.append(
            ("Predicted vs measured", "predicted_vs_measured.png", "the latency model against the device, per network")
        )
    grid = _lut_grid(lut_file) if lut_file is not None else None
    if grid is not None:
        family, ins, outs, values = grid
        plots.lut_heatmap(family, ins, outs, values, folder / "lut_heatmap.png")
        figures.append(("LUT of one layer", "lut_heatmap.png", f"measured latency over the channel grid: {family}"))
    return html.render(summary, figures, folder / "report.html")
