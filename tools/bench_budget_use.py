"""Benchmark: how much of a latency target do the ranking's plans use, as the table predicts them?

On the table's channel grid the next channel in the global order can cost a whole grid step of a wide coupled
group, so the first prefix of the order that fits may leave part of the target unused; the ranking then gives
channels back, most important first, wherever they still fit (`edgeprune.pruning.ranking._fill`). For each
model and each target from 0.26x to 0.60x of its predicted latency (steps of 0.02), this prunes by plain global
ranking of L2 norms, raw and mean-normalised, with and without that fill, and writes the predicted cost over the
target. Predictions only: nothing is compiled or measured (bench_pruning.py measures the pruned networks).

The models are the pruning benchmark's trained baselines and its latency table (bench/cache/, from
tools/bench_pruning.py); entries the table lacks are profiled on `local` first.

    .venv/bin/python tools/bench_budget_use.py [--models resnet20 mobilenetv2] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import statistics

from bench_pruning import CACHE, FULL, RESULTS

FRACTIONS = [round(0.26 + 0.02 * i, 2) for i in range(18)]


def use(model: str, seed: int) -> list[dict]:
    """Predicted cost / target for every fraction, normalisation and fill, on the model's trained baseline."""
    import edgeprune as ep
    from edgeprune.models.io import load_saved
    from edgeprune.pruning import criteria, ranking
    from edgeprune.pruning.budget import LatencyPredictor, bind
    from edgeprune.pruning.groups import analyze
    from edgeprune.targets import parse_target

    path = CACHE / "baselines" / f"{FULL.baseline_tag(model)}.pt"  # one baseline, whatever the seed
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run tools/bench_pruning.py --train-only --models {model} first")
    bundle = load_saved(path)
    lut = LatencyPredictor(ep.device("local"), bundle, profile_missing=True)
    structure = analyze(bundle.module, bundle.input_shape)
    raw = criteria.score("l2", bundle.module, structure)
    full = lut.predict_ms(bundle.module, bundle.input_shape)
    rows = []
    for fraction in FRACTIONS:
        budget = bind(parse_target("ms", fraction * full), bundle.module, structure, lut)
        floor = ranking.minimum_counts(structure.sizes(), budget.steps, 0.1)
        for normalize in ("none", "mean"):
            scores = ranking.normalize(raw, normalize)
            for fill in (False, True):
                plan = ranking.rank(scores, budget, floor, fill=fill)
                rows.append(
                    {
                        "model": model,
                        "fraction": fraction,
                        "normalize": normalize,
                        "fill": fill,
                        "used": plan.cost / budget.target,
                    }
                )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Share of a latency target the ranking's plan uses, as the table predicts (tools/bench_budget_use.py)",
        "",
        f"Targets {FRACTIONS[0]}x to {FRACTIONS[-1]}x of the unpruned model's predicted latency, steps of 0.02; "
        "plain global ranking of L2 norms (LeGR's identity), min keep 10%, counts on the table's grid.",
        "",
        "| model | scores | fill | mean used | min used | max used |",
        "|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["model"], r["normalize"], r["fill"]) for r in rows})
    for model, normalize, fill in keys:
        used = [r["used"] for r in rows if (r["model"], r["normalize"], r["fill"]) == (model, normalize, fill)]
        lines.append(
            f"| {model} | {normalize} | {'yes' if fill else 'no'} | {statistics.mean(used):.1%} | {min(used):.1%} "
            f"| {max(used):.1%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("EDGEPRUNE_PROFILES_DIR", str(CACHE / "profiles"))  # the pruning benchmark's table
    from edgeprune import atomic

    rows = [row for model in args.models for row in use(model, args.seed)]
    atomic.write_json(RESULTS / "budget-use.json", rows)
    atomic.write_text(RESULTS / "budget-use.md", markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
