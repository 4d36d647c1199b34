"""`report.html`: one page that shows a run (or a sweep) at a glance: the verdict, the numbers, the plots.

Plain HTML with inline CSS and the PNGs beside it: the folder can be copied, mailed or opened from a board's
SFTP mount without a server or a network.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeprune import atomic

Figure = tuple[str, str, str]  # (title, png file name relative to the report, caption)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; padding: 0 1.5rem;
       color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.verdict { font-size: 1.25rem; padding: 0.8rem 1rem; border-radius: 6px; margin: 1.2rem 0; }
.verdict.ok { background: #e8f5ec; color: #1e7b34; } .verdict.fail { background: #fbeceb; color: #b03a2e; }
.ok { color: #1e7b34; } .fail { color: #b03a2e; } .muted { color: #666; }
table { border-collapse: collapse; margin: 0.8rem 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e2e2e2; padding: 0.4rem 0.7rem; text-align: right; white-space: nowrap; }
td.note { white-space: normal; text-align: left; }
th { background: #f5f6f8; border-bottom: 2px solid #ccc; }
th:first-child, td:first-child { text-align: left; }
tr.ort td { color: #6c3483; font-style: italic; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; margin: 1.5rem 0; }
figure { margin: 0; display: table; }  /* a table: the caption wraps at the image's width */
figure img { display: block; border: 1px solid #eee; }
figcaption { display: table-caption; caption-side: bottom; font-size: 0.95rem; color: #555; margin-top: 0.3rem; }
code { background: #f3f3f3; padding: 0 0.25rem; border-radius: 3px; }
"""


# A run's figures, original vs pruned: (label, key in the summary's "original" / "pruned", format). The
# terminal's table after `edgeprune run` shows the same rows, so the two never disagree on what a run reports.
SUMMARY_ROWS = (
    ("measured latency", "measured_ms", "{:.3f} ms"),
    ("predicted latency (LUT)", "predicted_ms", "{:.3f} ms"),
    ("accuracy", "accuracy", "{:.2%}"),
    ("MACs", "flops", "{:,}"),
    ("parameters", "params", "{:,}"),
    ("artifact size", "artifact_bytes", "{:,} B"),
)


def summary_cell(value: Any, pattern: str) -> str:
    """One figure of `SUMMARY_ROWS` as text; '-' where the run has none (a stage that did not run)."""
    return "-" if value is None else pattern.format(value)


def _text(value: Any) -> str:
    return html.escape(str(value))


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ms"


def pct(value: float | None) -> str:
    """An accuracy (a fraction) as a percentage."""
    return "-" if value is None else f"{100 * value:.2f}%"


def count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _row(cells: Sequence[str], cls: str = "", note: str | None = None, span: int = 1) -> str:
    """A table row; `note`, when given, is one wrapping cell spanning `span` columns after `cells`."""
    attr = f' class="{cls}"' if cls else ""
    last = "" if note is None else f'<td class="note" colspan="{span}">{note}</td>'
    return f"<tr{attr}>" + "".join(f"<td>{cell}</td>" for cell in cells) + last + "</tr>"


def _table(header: Sequence[str], rows: Sequence[str]) -> str:
    return "<table><tr>" + "".join(f"<th>{_text(h)}</th>" for h in header) + "</tr>" + "".join(rows) + "</table>"


def _figures(figures: Sequence[Figure]) -> str:
    """The plots at their own size (readable as drawn), side by side where the page is wide enough."""
    return (
        '<div class="figures">'
        + "".join(
            f'<figure><img src="{_text(png)}" alt="{_text(title)}">'
            f"<figcaption><b>{_text(title)}</b>: {_text(caption)}</figcaption></figure>"
            for title, png, caption in figures
        )
        + "</div>"
    )


def thread_count(threads: int | None) -> str:
    """'1 thread', '2 threads' ('? threads' when unknown)."""
    return "? threads" if threads is None else f"{threads} thread" + ("" if threads == 1 else "s")


def ort_label(threads: int | None) -> str:
    """The one wording of an ONNX Runtime measurement, in tables and plots."""
    return f"ONNX Runtime, same ONNX file, {thread_count(threads)}"


def _ort_note(timing: dict[str, Any]) -> str:
    return f"{ort_label(timing.get('ort_threads'))}; spread {ms(timing.get('ort_spread_ms'))}"


def _rounds(rounds: Sequence[dict[str, Any]], stopped: str | None = None) -> str:
    """The closed loop: what the table predicted, what the device measured, the correction that followed, and
    which round was kept (the most accurate one that meets the target)."""
    rows = [
        _row(
            [
                _text(r.get("round")),
                f"x{r.get('scale', 1.0):.3f}",
                ms(r.get("predicted_ms")),
                f"{ms(r.get('measured_ms'))} &plusmn; {r.get('spread_ms', 0):.3f}",
                ms(r.get("baseline_ms")),
                ms(r.get("target_ms")),
                _meets(r),
                pct(r.get("accuracy")),
                "-" if r.get("correction") is None else f"x{r['correction']:.3f}",
                "<b>kept</b>" if r.get("chosen") else "",
            ]
        )
        for r in rounds
    ]
    header = (
        "round",
        "LUT factor",
        "predicted",
        "measured",
        "unpruned now",
        "target",
        "meets",
        "validation accuracy",
        "next factor",
        "",
    )
    why = f'<p class="muted">Stopped: {_text(stopped)}</p>' if stopped else ""
    return _table(header, rows) + why


def _meets(r: dict[str, Any]) -> str:
    """A round's yes/no, with the verdict of its 95% interval and the paired ratio a relative target is judged on."""
    mark = '<span class="ok">yes</span>' if r.get("meets_target") else '<span class="fail">no</span>'
    ratio = f", ratio {r['ratio']:.3f}" if r.get("target_ratio") and r.get("ratio") is not None else ""
    return mark + (f" ({_text(r['verdict'])}{ratio})" if r.get("verdict") else "")


def _reference(summary: dict[str, Any]) -> str:
    """The one reference measurement the target was fixed from, and how precise it is."""
    ref = summary.get("reference")
    if not ref or not ref.get("interval"):
        return ""
    i = ref["interval"]
    return (
        f'<p class="muted">Reference: the unpruned network measured once, {ms(ref["measured_ms"])} '
        f"(95% interval {i['low']:.3f}-{i['high']:.3f} ms, {i['samples']} samples, "
        f"&plusmn;{(ref.get('precision') or 0) * 100:.1f}% for a goal of &plusmn;{ref['precision_goal'] * 100:.0f}%); "
        "every round is held to the target it fixes, a relative target judged on the paired pruned/unpruned "
        "ratio.</p>"
    )


def _health(summary: dict[str, Any]) -> str:
    """The board's health warnings during the measurements (governor, throttling, heat, a clock that moved)."""
    said = summary.get("health_warnings") or []
    if not said:
        return ""
    items = "".join(f"<li>{_text(w)}</li>" for w in said)
    warning = "Board health during the measurements: the numbers may not hold."
    return f'<div class="verdict fail">{warning}<ul>{items}</ul></div>'


def _took(summary: dict[str, Any]) -> str:
    return f"This invocation took {summary.get('seconds', '-')} s (a resumed one counts only the work it did)."


def _page(title: str, body: str, path: Path) -> Path:
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{_text(title)}</title>
<style>{_STYLE}</style></head><body>
{body}
</body></html>
"""
    atomic.write_text(path, page)
    return path


def _about(summary: dict[str, Any], folder_key: str) -> str:
    emulated = "" if summary.get("timings_are_real", True) else " <b>Timings are an emulator's, not a board's.</b>"
    return (
        f"<p>Model <code>{_text(summary.get('model', ''))}</code> on device "
        f"<code>{_text(summary.get('device', ''))}</code>, folder <code>{_text(summary.get(folder_key, ''))}</code>."
        f"{emulated}</p>"
    )


def render(
    summary: dict[str, Any], figures: Sequence[Figure], path: Path, ort: dict[str, dict[str, Any]] | None = None
) -> Path:
    """A run's page. `ort`: ONNX Runtime's timing of the original and pruned ONNX files (their verify.json keys
    `ort_ms`, `ort_spread_ms`, `ort_threads`), when it was measured."""
    original, pruned = summary.get("original", {}), summary.get("pruned", {})
    ok = bool(summary.get("meets_target"))
    rows = []
    for label, key, pattern in SUMMARY_ROWS:
        rows.append(_row([label, *(_text(summary_cell(side.get(key), pattern)) for side in (original, pruned))]))
        if key == "measured_ms" and ort:  # what the user would ship otherwise, right under TVM's figure
            threads = next((side.get("ort_threads") for side in ort.values() if side), None)
            sides = [ort.get("original", {}), ort.get("pruned", {})]
            rows.append(_row([_text(ort_label(threads)), *(ms(s.get("ort_ms")) for s in sides)], "ort"))
    body = f"""<h1>edgeprune run</h1>
{_about(summary, "run_dir")}
<div class="verdict {"ok" if ok else "fail"}">The pruned model {"meets" if ok else "misses"} the target
{f"({_text(summary['verdict'])} at 95%)" if summary.get("verdict") else ""}:
<b>{ms(pruned.get("measured_ms"))}</b> measured against {ms(summary.get("target_ms"))};
speedup <b>{times(summary.get("speedup"))}</b>; accuracy {pct(original.get("accuracy"))} &rarr;
{pct(pruned.get("accuracy"))}</div>
{_health(summary)}
{_table(("", "original", "pruned"), rows)}
{_reference(summary)}
<h2>Rounds of the closed loop</h2>
<p class="muted">Each round prunes to the target as the latency table (times its factor) predicts it, compiles and
measures on the device beside the unpruned network; a miss corrects the factor by what was measured, and a round
well under the target prunes less in the next. The most accurate round that meets the target is kept.</p>
{_rounds(summary.get("round_details", []), summary.get("stopped"))}
<h2>Plots</h2>
{_figures(figures)}
<p class="muted">{_took(summary)}</p>"""
    return _page(f"edgeprune run: {summary.get('model', '')}", body, path)


def render_sweep(summary: dict[str, Any], figures: Sequence[Figure], path: Path) -> Path:
    """A sweep's page: one row per target beside the unpruned model, the Pareto plot, each target's rounds."""
    original, points = summary.get("original", {}), summary.get("points", [])
    rows = [
        _row(
            [
                "unpruned",
                "",
                f"{ms(original.get('measured_ms'))} &plusmn; {original.get('spread_ms', 0):.3f}",
                "",
                "1.00x",
                pct(original.get("accuracy")),
                count(original.get("flops")),
                count(original.get("params")),
                "",
            ]
        )
    ]
    if original.get("ort_ms") is not None:
        rows.append(_row(["unpruned, ONNX Runtime", "", ms(original["ort_ms"])], "ort", _text(_ort_note(original)), 6))
    for p in points:
        if "unreachable" in p:
            reason = f'<span class="fail">unreachable: {_text(p["unreachable"])}</span>'
            rows.append(_row([_text(p["target"]), ms(p.get("target_ms"))], note=reason, span=7))
            continue
        meets = _meets(p)
        rows.append(
            _row(
                [
                    _text(p["target"]),
                    ms(p.get("target_ms")),
                    f"{ms(p.get('measured_ms'))} &plusmn; {p.get('spread_ms', 0):.3f}",
                    meets,
                    times(p.get("speedup")),
                    pct(p.get("accuracy")),
                    count(p.get("flops")),
                    count(p.get("params")),
                    _text(len(p.get("rounds", []))),
                ]
            )
        )
    header = ("target", "target ms", "measured", "meets", "speedup", "accuracy", "MACs", "params", "rounds")
    measured = [p for p in points if "unreachable" not in p]
    met = sum(1 for p in measured if p.get("meets_target"))
    search = summary.get("search")
    searched = (
        f"One LeGR search ({_text(search.get('evaluations'))} candidates, {_text(search.get('seconds'))} s) "
        f"at the first target, reused for every other."
        if search
        else f"Method {_text(summary.get('method', ''))}: no search to share."
    )
    loops = "".join(f"<h3>Target {_text(p['target'])}</h3>{_rounds(p['rounds'], p.get('stopped'))}" for p in measured)
    body = f"""<h1>edgeprune sweep</h1>
{_about(summary, "sweep_dir")}
<div class="verdict {"ok" if met == len(points) else "fail"}">{met} of {len(points)} targets met on the device;
every point below was compiled and measured there. {searched}</div>
{_health(summary)}
{_table(header, rows)}
<p class="muted">Speedup: against the unpruned network measured again in the same session as the point.
Measured: median &plusmn; spread of the device's timing.</p>
{_reference(summary)}
{_figures(figures)}
<h2>Rounds of the closed loop, per target</h2>
{loops}
<p class="muted">{_took(summary)}</p>"""
    return _page(f"edgeprune sweep: {summary.get('model', '')}", body, path)
