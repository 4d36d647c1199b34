"""The run report's plots (matplotlib, Agg backend): each takes plain data and writes one PNG atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: boards, CI and SSH sessions have no display

import matplotlib.pyplot as plt  # noqa: E402

from edgeprune import atomic  # noqa: E402


def save_png(fig: plt.Figure, path: Path) -> Path:
    """Write the figure atomically and free it: the one way every report and benchmark plot is saved."""
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def channels(layers: Sequence[dict], path: Path) -> Path:
    """Per-layer channels before and after pruning: where the pruner took width away."""
    names = [str(layer["name"]) for layer in layers]
    before = [int(layer["before"]) for layer in layers]
    after = [int(layer["after"]) for layer in layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(names)), 3.8))
    xs = range(len(names))
    ax.bar(xs, before, color="#c8d3e6", label="before")
    ax.bar(xs, after, color="#2f6db5", label="after")
    ax.set_xticks(list(xs), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("output channels")
    ax.set_title("Channels per layer")
    ax.legend()
    return save_png(fig, path)


def candidates(points: Sequence[dict], path: Path, chosen_ms: float | None = None) -> Path:
    """Search candidates: validation score against predicted latency (each point one (alpha, kappa) tried)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    xs = [float(p["predicted_ms"]) for p in points]
    key = "accuracy" if points and "accuracy" in points[0] else "val_loss"
    ys = [float(p[key]) for p in points]
    ax.scatter(xs, ys, s=14, alpha=0.7, color="#2f6db5")
    if chosen_ms is not None:
        ax.axvline(chosen_ms, color="#c0392b", linestyle="--", label="target")
        ax.legend()
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("validation accuracy" if key == "accuracy" else "validation loss")
    ax.set_title("Search candidates")
    return save_png(fig, path)


def latency_bars(bars: Sequence[tuple[str, float, float | None]], path: Path, target_ms: float | None) -> Path:
    """Measured latency per compiled network and runtime: (label, median ms, spread ms), the target as a line."""
    fig, ax = plt.subplots(figsize=(7.0, 0.55 * len(bars) + 1.4))
    ys = range(len(bars))
    colors = ["#8e44ad" if "ONNX" in label else "#2f6db5" for label, _, _ in bars]
    ax.barh(list(ys), [ms for _, ms, _ in bars], xerr=[s or 0 for _, _, s in bars], color=colors, capsize=3)
    ax.set_yticks(list(ys), [label for label, _, _ in bars])
    ax.invert_yaxis()
    for y, (_, ms, spread) in zip(ys, bars, strict=True):  # past the error bar, so the two never overlap
        ax.annotate(f"{ms:.3f} ms", (ms + (spread or 0), y), xytext=(6, -4), textcoords="offset points", fontsize=9)
    if target_ms is not None:
        ax.axvline(target_ms, color="#c0392b", linestyle="--", label=f"target {target_ms:.3f} ms")
        ax.legend(loc="lower right")
    ax.margins(x=0.18)
    ax.set_xlabel("measured latency (ms), median and spread")
    ax.set_title("Latency on the device")
    return save_png(fig, path)


def predicted_vs_measured(points: Sequence[dict], path: Path) -> Path:
    """Predicted against measured latency for every compiled network of the run; the diagonal is a perfect model."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    xs = [float(p["measured_ms"]) for p in points]
    ys = [float(p["predicted_ms"]) for p in points]
    ax.scatter(xs, ys, color="#2f6db5", zorder=3)
    for p, x, y in zip(points, xs, ys, strict=True):
        ax.annotate(str(p.get("label", "")), (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    top = max(xs + ys + [1e-3]) * 1.15
    ax.plot([0, top], [0, top], color="#999999", linewidth=1)
    ax.fill_between([0, top], [0, top * 0.9], [0, top * 1.1], color="#dddddd", alpha=0.5, label="+-10%")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("measured on device (ms)")
    ax.set_ylabel("predicted by the LUT (ms)")
    ax.set_title("Predicted vs measured")
    ax.legend(loc="upper left")
    return save_png(fig, path)


def lut_heatmap(
    layer: str, in_channels: Sequence[int], out_channels: Sequence[int], grid_ms: Sequence[Sequence[float]], path: Path
) -> Path:
    """Latency of one layer over the (kept in-channels, kept out-channels) grid the LUT measured."""
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    image = ax.imshow(grid_ms, origin="lower", aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(out_channels)), [str(c) for c in out_channels], fontsize=7, rotation=60)
    ax.set_yticks(range(len(in_channels)), [str(c) for c in in_channels], fontsize=7)
    ax.set_xlabel("kept output channels")
    ax.set_ylabel("kept input channels")
    ax.set_title(f"LUT: {layer}")
    fig.colorbar(image, ax=ax, label="ms")
    return save_png(fig, path)


def pareto(points: Sequence[dict], path: Path, ort_ms: float | None = None) -> Path:
    """Accuracy against measured latency for the unpruned model and every target of a sweep.

    The line joins the Pareto front (no other point is both faster and more accurate): the networks worth
    choosing from. `points`: label, measured_ms, accuracy (a fraction), meets (None for the unpruned model)."""
    fig, ax = plt.subplots(figsize=(9.0, 5.2))
    xs = [float(p["measured_ms"]) for p in points]
    ys = [100.0 * float(p["accuracy"]) for p in points]
    front = sorted(
        (x, y)
        for x, y in zip(xs, ys, strict=True)
        if not any(a <= x and b > y or a < x and b >= y for a, b in zip(xs, ys, strict=True))
    )
    if len(front) > 1:
        ax.step(
            *zip(*front, strict=True), where="post", color="#2f6db5", linewidth=1.5, alpha=0.6, label="Pareto front"
        )
    styles = {
        None: ("s", "#444444", "unpruned"),
        True: ("o", "#1e7b34", "meets its target"),
        False: ("X", "#b03a2e", "misses its target"),
    }
    for meets, (marker, color, label) in styles.items():
        chosen = [(x, y) for p, x, y in zip(points, xs, ys, strict=True) if p.get("meets") is meets]
        if chosen:
            ax.scatter(*zip(*chosen, strict=True), marker=marker, s=70, color=color, zorder=3, label=label)
    # neighbours in latency take turns above and below their points, so close targets keep readable labels
    by_latency = sorted(zip(xs, ys, (str(p["label"]) for p in points), strict=True))
    for i, (x, y, label) in enumerate(by_latency):
        ax.annotate(label, (x, y), fontsize=10, xytext=(6, 6 if i % 2 == 0 else -15), textcoords="offset points")
    if ort_ms is not None:
        ax.axvline(ort_ms, color="#8e44ad", linestyle=":", label=f"ONNX Runtime, unpruned ({ort_ms:.3g} ms)")
    ax.margins(x=0.12, y=0.15)  # room for the labels beside the outermost points
    ax.set_xlim(left=0)
    ax.set_xlabel("measured latency on the device (ms)", fontsize=11)
    ax.set_ylabel("test accuracy (%)", fontsize=11)
    ax.set_title("Accuracy vs measured latency", fontsize=13)
    ax.grid(alpha=0.3)
    # below the axes: any corner of the plot may hold a network (a mild target prunes little and loses nothing)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4, frameon=False)
    fig.subplots_adjust(bottom=0.24)
    return save_png(fig, path)
