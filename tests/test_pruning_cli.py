"""`edgeprune prune` end to end: a trained model on digits, FLOPs targets, a millisecond target through a real
latency table measured on the local RPC farm, reuse of the learned search, and every bad input of the issue."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgeprune.cli import main
from edgeprune.devices.base import Device, TimingSettings
from edgeprune.models.io import load_saved

PRUNE_KEYS = {
    "output", "method", "predicted_ms", "original_predicted_ms", "flops", "params", "accuracy_before",
    "accuracy_after", "search_seconds", "layers",
}  # fmt: skip
TINY_SEARCH = ("--population", "4", "--sample-size", "2", "--generations", "3", "--search-steps", "3")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, " ".join(err.split())


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("baseline") / "base.pt"
    argv = ["train", "resnet20", "--data", "digits", "--input-shape", "1x8x8", "--width", "0.25", "--epochs", "3"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "-o", str(path)])
    assert exit_info.value.code in (0, None)
    return path


def test_prune_to_flops_then_reuse_the_search_for_another_budget(
    baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "pruned.pt"
    args = (
        "prune",
        str(baseline),
        "-o",
        str(output),
        "--finetune-epochs",
        "1",
        *TINY_SEARCH,
        "--finalists",
        "1",
        "--json",
    )
    code, out, err = run(capsys, *args, "--target-flops", "50%")
    assert code == 0, err
    summary = json.loads(out)
    assert PRUNE_KEYS | {"target_flops"} <= set(summary) and summary["method"] == "legr"
    assert summary["flops"] <= summary["target_flops"] == pytest.approx(summary["original_flops"] / 2)
    assert summary["predicted_ms"] is None and summary["search_evaluations"] == 7
    finalists = summary["search_finalists"]  # the two seeds (one, if they keep the same channels) and the best
    assert 2 <= len(finalists) <= 3 and finalists[0]["born"] == 0 and summary["normalize"] == "none"
    answer = min(finalists, key=lambda f: f["loss"])
    assert summary["search_fitness"] == answer["fitness"]
    assert json.loads((tmp_path / "pruned.json").read_text()) == summary
    assert (tmp_path / "pruned.legr.json").is_file()
    pruned = load_saved(output)
    assert pruned.meta["pruning"]["flops"] == summary["flops"] and pruned.meta["accuracy"] == summary["accuracy_after"]
    widths = {row["name"]: row["after"] for row in summary["layers"]}
    assert pruned.module.get_submodule("layers.3.conv1").out_channels == widths["layers.3.conv1"]

    code, out, err = run(capsys, *args, "--target-flops", "35%")  # one search, many budgets
    assert code == 0, err
    second = json.loads(out)
    assert second["reused_search"] == str(tmp_path / "pruned.legr.json") and second["search_evaluations"] == 0
    assert second["search_finalists"] == []
    assert "reusing the learned" in err and second["flops"] <= second["target_flops"] < summary["flops"]


def test_prune_to_milliseconds_on_the_local_device(
    baseline: Path, local_farm: Device, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeprune.profiling.latency import LatencyModel
    from edgeprune.profiling.profiler import profile_model

    output = tmp_path / "fast.pt"
    args = ("prune", str(baseline), "--device", "local", "-o", str(output), "--method", "global", "--json")
    code, _, err = run(capsys, *args, "--target-ms", "1")
    assert code == 2 and "edgeprune profile" in err  # no table yet: how to get one

    # coarse grid, real timings
    profile_model(load_saved(baseline), local_farm, trials=1, settings=TimingSettings(repeat=3))
    model = LatencyModel.for_device(local_farm)
    original = model.predict_ms(load_saved(baseline).module, (1, 8, 8))
    # an 8x8 net is mostly fixed per-layer cost (at 10% of every layer it costs ~0.9x or, by the noise of such tiny
    # kernels, about as much as the full net): the error for an impossible target names the reachable minimum
    code, _, err = run(capsys, *args, "--target-ms", f"{original * 0.01:.6f}")
    reachable = re.search(r"smallest reachable ([0-9.]+) ms", err)
    assert code == 2 and reachable, err
    target = float(reachable.group(1)) + 0.001  # just above the printed (3-decimal) floor: reachable
    code, out, err = run(capsys, *args, "--target-ms", f"{target:.6f}", "--finetune-epochs", "1")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["original_predicted_ms"] == pytest.approx(original)
    assert summary["predicted_ms"] <= summary["target_ms"] and summary["within_budget"]
    pruned = load_saved(output).module
    assert model.predict_ms(pruned, (1, 8, 8)) == pytest.approx(summary["predicted_ms"])
    steps = model.channel_steps(load_saved(baseline).module, (1, 8, 8))
    for row in summary["layers"]:  # every kept width is a measured grid point of the table
        if row["name"] in steps:
            assert row["after"] == row["before"] or row["after"] % steps[row["name"]] == 0, row

    other = tmp_path / "vgg.pt"
    code, _, _ = run(capsys, "train", "vgg11", "--data", "digits", "--input-shape", "1x8x8", "--width", "0.125",
                     "--epochs", "1", "-o", str(other))  # fmt: skip
    assert code == 0
    code, _, err = run(
        capsys, "prune", str(other), "--device", "local", "--target-ms", "0.05", "-o", str(tmp_path / "v.pt")
    )
    assert code == 2 and "lacks" in err and "--profile-missing" in err
    assert f"edgeprune profile {other} --device local" in " ".join(err.split())  # the file, as the user named it


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--target-flops", "10"), "below the smallest reachable"),
        ((), "give exactly one budget"),
        (("--target-flops", "50%", "--target-params", "50%"), "give exactly one budget"),
        (("--target-ms", "1"), "--target-ms needs --device"),
        (("--target-flops", "lots"), "is not a number"),
        (("--target-ms", "-1"), "--target-ms -1: a target must be a positive number of milliseconds"),
        (("--target-flops", "50%", "--input-shape", "1x16x16"), "does not match the saved model's input"),
        (("--target-flops", "50%", "--data", "cifar10:/nonexistent"), "no CIFAR-10 python batches"),
        (("--target-flops", "50%", "--method", "magic"), "unknown --method"),
        (("--target-flops", "50%", "--criterion", "bn", "--method", "global", "--data", "digits"), None),
        (("--target-flops", "50%", "--reuse-search", "/nonexistent.json"), "not found"),
        (("--target-flops", "50%", "--min-keep", "0"), "--min-keep must be in (0, 1]"),
        (("--target-flops", "50%", "--batch-size", "0"), "--batch-size >= 1"),
        (("--target-flops", "50%", "--lr", "-1"), "--lr a positive number"),
        (("--target-flops", "50%", "--channel-step", "0"), "--channel-step must be >= 1"),
    ],
)
def test_prune_bad_input(
    extra: tuple, message: str | None, baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.pt"
    code, _, err = run(capsys, "prune", str(baseline), "-o", str(output), "--finetune-epochs", "0", *extra)
    if message is None:  # a valid combination, as a control for the cases around it
        assert code == 0, err
        return
    assert code == 2 and message in err, err
    assert not output.exists()


def test_prune_to_a_folder_is_refused_before_work(baseline: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "prune", str(baseline), "-o", str(tmp_path), "--target-flops", "50%")
    assert code == 2 and "is a folder" in err and "pruning" not in err


def test_prune_edge_cases(baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "same.pt"
    code, out, err = run(capsys, "prune", str(baseline), "--target-params", "1G", "-o", str(output), "--json")
    assert code == 0 and "already meets" in err and json.loads(out)["unchanged"]
    assert output.is_file()

    factory = tmp_path / "head.py"
    factory.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Head(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(16, 10)\n\n"
        "    def forward(self, x):\n        return self.fc(torch.flatten(x, 1))\n\n"
        "def make():\n    return Head()\n"
    )
    code, _, err = run(capsys, "prune", f"{factory}:make", "--input-shape", "1x4x4", "--data", "digits",
                       "--target-flops", "50%", "-o", str(tmp_path / "h.pt"))  # fmt: skip
    assert code == 2 and "no prunable channels" in err

    other = tmp_path / "other.legr.json"
    other.write_text(json.dumps({"format": "edgeprune-legr", "criterion": "l2", "groups": [{"name": "x", "size": 3}]}))
    code, _, err = run(capsys, "prune", str(baseline), "--target-flops", "50%", "--reuse-search", str(other),
                       "-o", str(tmp_path / "r.pt"))  # fmt: skip
    assert code == 2 and "different model" in err

    # a FLOPs target below 1 is a fraction of the original, as 50% is
    code, out, _ = run(capsys, "prune", str(baseline), "--target-flops", "0.5", "--method", "global",
                       "--finetune-epochs", "0", "-o", str(tmp_path / "half.pt"), "--json")  # fmt: skip
    half = json.loads(out)
    assert code == 0 and half["target"] == "50% of the original flops"
    assert half["flops"] <= half["target_flops"] == pytest.approx(half["original_flops"] / 2)


def test_prune_runs_the_schedule_and_refuses_it_where_it_does_not_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--steps (edgeprune.pruning.schedule; its logic is tested in test_pruning_schedule) reaches the library."""
    output = tmp_path / "pruned.pt"
    common = ("prune", "resnet20", "--data", "digits", "--input-shape", "1x8x8", "--width", "0.25", "--limit", "200")
    code, out, err = run(capsys, *common, "-o", str(output), "--method", "global", "--target-flops", "50%",
                         "--steps", "2", "--finetune-epochs", "1", "--json")  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 2 and summary["within_budget"] and output.is_file()
    for wrong, message in ((("--steps", "0"), "--steps must be >= 1"), (("--method", "iap", "--steps", "2"), "iap")):
        code, _, err = run(capsys, *common, "-o", str(tmp_path / "no.pt"), "--target-flops", "50%", *wrong)
        assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "no.pt").exists()
