"""Benchmark: does `verify`'s verdict hold still, and does the run's reference measurement?

One artifact (resnet20 at width 0.7, standing in for a pruned network) is verified RUNS times against a relative
target set just above its measured ratio to the unpruned network (resnet20 at width 1.0), where noise decides.
Each verification takes the paired, interleaved samples `verify` takes; from the same samples:
- before: the old verdict, the first --repeat samples' median ratio against the target, with no interval;
- after: the verdict of the paired ratio's 95% interval (`verify.confidence`), with more samples up to the cap
  while it is TOO CLOSE TO CALL.
Then the unpruned network is measured RUNS times as a run's reference: before, --repeat samples each; after,
until its median's interval is within +-1% (REFERENCE_PRECISION), up to the cap. The spread of those medians is
how far a relative target would move between runs (or, before #32, between rounds of one run).

Both networks are compiled for `local` with no tuning (the same code every time): timing only, no pruning.
Writes bench/results/verify-stability.md (and .json). A timing run: run it on a quiet machine, or say in
--label what else ran.

    .venv/bin/python tools/verify_stability.py [--runs 10] [--margin 0.015] [--label "quiet machine"]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
SHAPE = (3, 32, 32)


def compile_pair(folder: Path, device: object) -> tuple[Path, Path]:
    from edgeprune.compile.compiler import compile_model
    from edgeprune.models.io import load_model

    paths = []
    for name, width in (("pruned-stand-in", 0.7), ("unpruned", 1.0)):
        out = folder / name
        compile_model(load_model("resnet20", SHAPE, 10, width=width), device, out, trials_per_task=0)
        paths.append(out)
    return paths[0], paths[1]


def spread(values: list[float]) -> float:
    """(max - min) / median: how far apart the measurements land."""
    return (max(values) - min(values)) / statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--margin", type=float, default=0.015, help="target = measured ratio x (1 + margin)")
    parser.add_argument("--label", default="shared, loaded machine (other sessions' work ran beside it)")
    args = parser.parse_args()

    import edgeprune as ep
    from edgeprune.compile.artifacts import load_artifact
    from edgeprune.confidence import MEETS, MISSES, TOO_CLOSE, median_interval, ratio_interval, verdict
    from edgeprune.verify.defaults import REFERENCE_PRECISION
    from edgeprune.verify.verifier import measure_side_by_side

    device = ep.device("local")
    repeat = device.timing.repeat
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, device.serving(1):
        art_path, base_path = compile_pair(Path(tmp), device)
        art, base = load_artifact(art_path), load_artifact(base_path)
        first = measure_side_by_side(art, device, base)
        target = first.ratio.estimate * (1 + args.margin)  # type: ignore[union-attr]

        def settled(samples: dict[str, list[float]]) -> bool:
            return verdict(ratio_interval(samples["artifact"], samples["baseline"]), target) != TOO_CLOSE

        runs = []
        for _ in range(args.runs):
            taken = measure_side_by_side(art, device, base, enough=settled).samples
            old = statistics.median(taken["artifact"][:repeat]) / statistics.median(taken["baseline"][:repeat])
            interval = ratio_interval(taken["artifact"], taken["baseline"])
            runs.append(
                {
                    "before_ratio": old,
                    "before": MEETS if old <= target else MISSES,
                    "after": verdict(interval, target),
                    "after_interval": interval.to_json(),
                    "samples": len(taken["artifact"]),
                }
            )
        references: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for _ in range(args.runs):
            for name, enough in (
                ("before", None),
                ("after", lambda s: median_interval(s["artifact"]).half_width <= REFERENCE_PRECISION),
            ):
                taken = measure_side_by_side(base, device, None, enough=enough).samples["artifact"]
                interval = median_interval(taken)
                references[name].append(
                    {"median_ms": interval.estimate, "half_width": interval.half_width, "samples": len(taken)}
                )
    result = {
        "label": args.label,
        "device": device.name,
        "repeat": repeat,
        "target_ratio": target,
        "runs": runs,
        "references": references,
        "seconds": round(time.monotonic() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "verify-stability.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "verify-stability.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    runs, refs = result["runs"], result["references"]
    before = [r["before"] for r in runs]
    after = [r["after"] for r in runs]
    lines = [
        "# verify-stability: one artifact verified again and again, and the run's reference",
        "",
        f"Machine: **{result['label']}**. Device `{result['device']}` (this machine's CPU through the loopback "
        f"farm). Written by `tools/verify_stability.py` in {result['seconds']} s.",
        "",
        f"resnet20 at width 0.7 (a pruned stand-in) against resnet20 at width 1.0, {len(runs)} verifications, "
        f"relative target {result['target_ratio']:.4f} (the first measured ratio + the margin): close enough that "
        "noise decides the old verdict.",
        "",
        "| run | before: median ratio (first "
        f"{result['repeat']} pairs) | before | after: paired ratio, 95% interval | samples | after |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(runs, 1):
        iv = r["after_interval"]
        lines.append(
            f"| {i} | {r['before_ratio']:.4f} | {r['before']} | {iv['estimate']:.4f} "
            f"({iv['low']:.4f}-{iv['high']:.4f}) | {r['samples']} | {r['after']} |"
        )
    decided = {v for v in after if v != "TOO CLOSE TO CALL"}
    lines += [
        "",
        f"- Before: {before.count('MEETS')} MEETS, {before.count('MISSES')} MISSES: the verdict "
        + ("flipped." if len(set(before)) > 1 else "held."),
        f"- After: {after.count('MEETS')} MEETS, {after.count('MISSES')} MISSES, "
        f"{after.count('TOO CLOSE TO CALL')} TOO CLOSE TO CALL: the decided verdicts "
        + ("disagree." if len(decided) > 1 else "never flip."),
        "",
        "## The reference: the unpruned network measured as a run fixes its relative target",
        "",
        "| | medians (ms) | spread of the medians (max-min)/median | median's own 95% half-width | samples |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, what in (("before", "before (--repeat samples)"), ("after", "after (until +-1%, up to the cap)")):
        medians = [x["median_ms"] for x in refs[name]]
        lines.append(
            f"| {what} | {min(medians):.4f}-{max(medians):.4f} | {spread(medians):.1%} | "
            f"{statistics.median(x['half_width'] for x in refs[name]):.1%} | "
            f"{statistics.median(x['samples'] for x in refs[name]):.0f} |"
        )
    lines += [
        "",
        "Before #32 each round of a run re-derived its relative target from the unpruned network measured beside "
        "it, so the target moved by the spread above; now one reference fixes it for the run and rounds are "
        "judged on the paired ratio.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
