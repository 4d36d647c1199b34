"""`report.html`: one page that shows a run at a glance: the verdict, original vs pruned, and the plots."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeprune import atomic

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.ok { color: #1e7b34; } .fail { color: #b03a2e; }
figure { display: inline-block; margin: 0.5rem; vertical-align: top; }
figcaption { font-size: 0.85rem; color: #555; max-width: 480px; }
code { background: #f3f3f3; padding: 0 0.2rem; }
"""


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, int) and abs(value) >= 10_000:
        text = f"{value:,}"
    else:
        text = str(value)
    return html.escape(text + unit)


def render(summary: dict[str, Any], figures: Sequence[tuple[str, str, str]], path: Path) -> Path:
    """`figures`: (title, png file name relative to the report, caption)."""
    original, pruned = summary.get("original", {}), summary.get("pruned", {})
    verdict = "meets" if summary.get("meets_target") else "misses"
    cls = "ok" if summary.get("meets_target") else "fail"
    rows = [
        ("measured latency", "measured_ms", " ms"),
        ("predicted latency", "predicted_ms", " ms"),
        ("accuracy", "accuracy", ""),
        ("FLOPs", "flops", ""),
        ("parameters", "params", ""),
        ("artifact size", "artifact_bytes", " B"),
    ]
    table = "".join(
        f"<tr><td>{label}</td><td>{_fmt(original.get(key), unit)}</td><td>{_fmt(pruned.get(key), unit)}</td></tr>"
        for label, key, unit in rows
    )
    rounds = "".join(
        f"<tr><td>{r.get('round')}</td><td>{_fmt(r.get('predicted_ms'), ' ms')}</td>"
        f"<td>{_fmt(r.get('measured_ms'), ' ms')}</td><td>{_fmt(r.get('accuracy'))}</td>"
        f"<td>{_fmt(r.get('correction'))}</td><td>{'kept' if r.get('chosen') else ''}</td></tr>"
        for r in summary.get("round_details", [])
    )
    images = "".join(
        f'<figure><img src="{html.escape(png)}" alt="{html.escape(title)}" width="470">'
        f"<figcaption><b>{html.escape(title)}</b>: {html.escape(caption)}</figcaption></figure>"
        for title, png, caption in figures
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgeprune run: {html.escape(str(summary.get("model", "")))}</title>
<style>{_STYLE}</style></head><body>
<h1>edgeprune run</h1>
<p>Model <code>{html.escape(str(summary.get("model", "")))}</code> on device
<code>{html.escape(str(summary.get("device", "")))}</code>,
run folder <code>{html.escape(str(summary.get("run_dir", "")))}</code>.</p>
<h2 class="{cls}">The pruned model {verdict} the budget: {_fmt(pruned.get("measured_ms"), " ms")} measured
against a target of {_fmt(summary.get("target_ms"), " ms")}; speedup {_fmt(summary.get("speedup"), "x")}</h2>
<table><tr><th></th><th>original</th><th>pruned</th></tr>{table}</table>
<h3>Rounds of the closed loop</h3>
<table><tr><th>round</th><th>predicted</th><th>measured</th><th>validation accuracy</th>
<th>correction applied after</th><th></th></tr>{rounds}</table>
<p>{html.escape(str(summary.get("stopped", "")))}</p>
{images}
<p>Total time {_fmt(summary.get("seconds"), " s")}.</p>
</body></html>
"""
    atomic.write_text(path, page)
    return path
