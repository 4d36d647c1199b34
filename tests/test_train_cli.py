"""`edgeprune train`: a real baseline on digits, reproducible by seed, resumable, with clear errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgeprune.cli import main
from edgeprune.data import load_dataset
from edgeprune.models.io import load_model, load_saved
from edgeprune.pruning.finetune import TrainSettings, initialize, train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


# the Adam recipe: SGD needs more than 2 epochs of digits' 20 batches (tests/test_train_recipe.py covers it); no
# augmentation, which costs accuracy on short runs (bench/results/train-recipe.md)
BASE = ("train", "resnet20", "--data", "digits", "--input-shape", "1x8x8", "--width", "0.25", "--epochs", "2")
BASE = (*BASE, "--recipe", "adam", "--no-augment")


def test_train_writes_a_trained_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *BASE, "-o", str(tmp_path / "a.pt"), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert {"output", "accuracy", "epochs", "seconds"} <= set(report) and report["epochs"] == 2
    bundle = load_saved(tmp_path / "a.pt")
    assert bundle.trained and bundle.meta["dataset"] == "digits"
    assert bundle.meta["accuracy"] == report["accuracy"] > 0.3  # ten classes: chance is 0.1
    assert set(bundle.meta["normalization"]) == {"mean", "std"}
    assert bundle.input_shape == (1, 8, 8) and bundle.num_classes == 10
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # the epoch checkpoint is gone
    code, out, _ = run(capsys, *BASE, "-o", str(tmp_path / "b.pt"), "--json")
    assert json.loads(out)["accuracy"] == report["accuracy"]  # same seed, same model
    again = load_saved(tmp_path / "b.pt").module.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in bundle.module.state_dict().items())


class _Interrupt:
    """Stands in for the progress display and raises KeyboardInterrupt mid-run, as Ctrl-C would."""

    def __init__(self, after: int) -> None:
        self.after, self.steps = after, 0

    def add_task(self, *_args: object, **_kwargs: object) -> int:
        return 0

    def update(self, _task: int, **_kwargs: object) -> None:
        self.steps += 1
        if self.steps > self.after:
            raise KeyboardInterrupt

    def remove_task(self, _task: int) -> None:
        pass


def test_an_interrupted_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    data = load_dataset("digits", (1, 8, 8), seed=0)
    settings = TrainSettings(epochs=3)

    def fresh() -> torch.nn.Module:
        module = load_model("resnet20", (1, 8, 8), 10, width=0.25).module
        initialize(module, 0)
        return module

    whole = fresh()
    train(whole, data, settings, torch.Generator().manual_seed(0))
    checkpoint = tmp_path / "ckpt.pt"
    steps_per_epoch = -(-len(data.train) // settings.batch_size)
    with pytest.raises(KeyboardInterrupt):
        train(fresh(), data, settings, torch.Generator().manual_seed(0), _Interrupt(steps_per_epoch + 5), checkpoint)
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1
    resumed = fresh()  # a new process would start from scratch, then find the checkpoint
    train(resumed, data, settings, torch.Generator().manual_seed(0), None, checkpoint)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in whole.state_dict().items())


def test_ctrl_c_exits_130_and_writes_no_model(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    command = [sys.executable, "-m", "edgeprune", "train", "lenet5", "--data", "digits", "--epochs", "500", "-o"]

    def as_in_a_terminal() -> None:  # a background job (CI under nohup) inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen([*command, str(out)], stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal)
    assert process.stderr is not None
    while "training lenet5" not in process.stderr.readline():  # started: the data is loaded, epochs run
        assert process.poll() is None
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "lenet5", "--data", "digits", "--input-shape", "1x2x2"), "does not accept input"),
        (("train", "resnet20", "--data", "digits", "--classes", "5"), "predicts 5 classes but 'digits' has 10"),
        (("train", "resnet20", "--data", "cifar10:/nonexistent"), "no CIFAR-10 python batches"),
        (("train", "resnet20", "--data", "mnist"), "unknown data set"),
        (("train", "nosuchnet", "--data", "digits"), "unknown MODEL"),
        (("train", "resnet20", "--data", "digits", "--epochs", "0"), "--epochs must be >= 1"),
        (("train", "resnet20", "--data", "digits", "--batch-size", "0"), "--batch-size >= 1"),
        (("train", "resnet20", "--data", "digits", "--lr", "-1"), "--lr a positive number"),
        (("train", "resnet20", "--data", "digits", "--width", "0"), "width multiplier must be a positive"),
        (("train", "resnet20", "--data", "digits", "--classes", "0"), "at least one class"),
    ],
)
def test_train_bad_input(args: tuple, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *args, "-o", str(tmp_path / "m.pt"))
    assert code == 2 and message in " ".join(err.split())
    assert not (tmp_path / "m.pt").exists()


def test_output_that_is_a_folder_is_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "train", "lenet5", "--data", "digits", "-o", str(tmp_path))
    assert code == 2 and "is a folder" in err and "training" not in err
    assert list(tmp_path.iterdir()) == []  # no checkpoint left beside it either
