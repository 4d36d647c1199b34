"""The training recipes (issue 31, item 1): SGD with Nesterov momentum, warm-up + cosine, crops and flips where
the data set allows, label smoothing as an option, and the first (Adam) recipe kept as `--recipe adam`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from edgeprune.data import Dataset
from edgeprune.data.augment import augment, padding
from edgeprune.errors import EdgepruneError
from edgeprune.models.io import load_model, load_saved
from edgeprune.pruning.finetune import RECIPES, TrainSettings, evaluate, initialize, schedule_factor, train
from tests.test_train_cli import BASE, _Interrupt, run

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch at 1 thread for the module


def dot(count: int, row: int, col: int, size: int = 8) -> torch.Tensor:
    """`count` copies of a black 1 x size x size image with one white pixel at (row, col)."""
    images = torch.zeros(count, 1, size, size, dtype=torch.uint8)
    images[:, 0, row, col] = 255
    return images


def test_a_crop_shifts_each_image_by_at_most_the_padding() -> None:
    images = dot(200, 4, 4)
    shifted = augment(images, torch.Generator().manual_seed(0), flip=False)
    assert shifted.shape == images.shape and shifted.dtype == images.dtype
    where = [divmod(int(i.flatten().argmax()), 8) for i in shifted]
    assert all(abs(r - 4) <= padding(8, 8) and abs(c - 4) <= padding(8, 8) for r, c in where)
    assert len(set(where)) == (2 * padding(8, 8) + 1) ** 2  # every shift is drawn
    assert int(shifted.sum()) == 200 * 255  # a shift of 1 from the centre never crops the dot away


def test_flips_mirror_only_when_allowed_and_the_draws_follow_the_generator() -> None:
    images = dot(400, 3, 1, size=16)  # padding 2: unflipped the dot stays in columns 0-3
    plain = augment(images, torch.Generator().manual_seed(1), flip=False)
    flipped = augment(images, torch.Generator().manual_seed(1), flip=True)
    columns = [int(i.flatten().argmax()) % 16 for i in flipped]
    assert max(int(i.flatten().argmax()) % 16 for i in plain) <= 3
    assert 100 < sum(c >= 12 for c in columns) < 300  # about half mirrored
    again = augment(images, torch.Generator().manual_seed(1), flip=True)
    assert torch.equal(flipped, again)


def test_only_data_sets_whose_classes_survive_a_mirror_are_flipped(digits: Dataset) -> None:
    assert not digits.mirrorable  # a mirrored 2 is no digit
    assert replace(digits, spec="fashion-mnist").mirrorable
    assert replace(digits, spec="cifar10:/somewhere").mirrorable
    assert not replace(digits, spec="imagefolder:/somewhere").mirrorable
    with pytest.raises(EdgepruneError, match="need a generator"):
        next(digits.batches(digits.train, 8, None, augmented=True))


def test_recipes_set_their_defaults_and_the_caller_overrides_them() -> None:
    assert list(RECIPES) == ["sgd", "adam"]
    sgd = TrainSettings.recipe_default("sgd", epochs=3)
    assert (sgd.recipe, sgd.lr, sgd.weight_decay, sgd.augment, sgd.epochs) == ("sgd", 0.05, 5e-4, False, 3)
    assert sgd.warmup_epochs > 0 and sgd.label_smoothing == 0.0
    assert TrainSettings.recipe_default("sgd", lr=0.1, augment=False, label_smoothing=None).lr == 0.1
    adam = TrainSettings.recipe_default("adam", epochs=5, lr=None)
    assert adam == TrainSettings(epochs=5)  # the first recipe, as pruning's fine-tunes have always used it
    with pytest.raises(EdgepruneError, match="unknown training recipe 'rmsprop'"):
        TrainSettings.recipe_default("rmsprop")
    with pytest.raises(EdgepruneError, match="unknown training setting"):
        TrainSettings.recipe_default("sgd", learning_rate=0.1)
    with pytest.raises(EdgepruneError, match="label-smoothing"):
        TrainSettings.recipe_default("sgd", label_smoothing=1.0).check()


def test_the_schedule_warms_up_then_decays_to_zero() -> None:
    factors = [schedule_factor(step, 100, 10) for step in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:10], factors[1:10], strict=False))
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    assert factors[100] == pytest.approx(0.0, abs=1e-12)


def _trained(
    digits: Dataset, settings: TrainSettings, checkpoint: Path | None = None, progress: object = None
) -> torch.nn.Module:
    module = load_model("resnet20", (1, 8, 8), 10, width=0.25).module
    initialize(module, 0)
    train(module, digits, settings, torch.Generator().manual_seed(0), progress, checkpoint)  # type: ignore[arg-type]
    return module


def test_the_sgd_recipe_learns_and_is_reproducible_by_seed(digits: Dataset) -> None:
    settings = TrainSettings.recipe_default("sgd", epochs=3, label_smoothing=0.1, augment=True)
    first, second = _trained(digits, settings), _trained(digits, settings)
    assert evaluate(first, digits, digits.test)[1] > 0.5  # ten classes: chance is 0.1
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())
    unaugmented = _trained(digits, replace(settings, augment=False))
    assert not torch.equal(unaugmented.state_dict()["fc.weight"], first.state_dict()["fc.weight"])


def test_the_rate_follows_the_schedule_to_zero_at_the_last_step(digits: Dataset, tmp_path: Path) -> None:
    """The schedule's step count is not the running loss sum: the two once shared a name, and the rate then
    wandered with the loss instead of decaying (every recipe trained so until the fix)."""
    settings = TrainSettings.recipe_default("sgd", epochs=2)
    checkpoint = tmp_path / "ckpt.pt"
    _trained(digits, settings, checkpoint)
    state = torch.load(checkpoint, weights_only=False)
    steps = 2 * -(-len(digits.train) // settings.batch_size)
    assert state["schedule"]["last_epoch"] == steps
    assert state["schedule"]["_last_lr"][0] == pytest.approx(0.0, abs=1e-9)


def test_an_interrupted_sgd_run_resumes_to_the_same_weights(digits: Dataset, tmp_path: Path) -> None:
    """The generator's state in the checkpoint covers the augmentation's draws too, the schedule its warm-up."""
    settings = TrainSettings.recipe_default("sgd", epochs=2, augment=True)
    whole = _trained(digits, settings)
    checkpoint = tmp_path / "ckpt.pt"
    steps_per_epoch = -(-len(digits.train) // settings.batch_size)
    with pytest.raises(KeyboardInterrupt):
        _trained(digits, settings, checkpoint, _Interrupt(steps_per_epoch + 5))
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1
    resumed = _trained(digits, settings, checkpoint)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in whole.state_dict().items())


def test_a_resumed_run_counts_its_seconds_on_from_the_checkpoint(digits: Dataset, tmp_path: Path) -> None:
    """A baseline trained over several sessions states what its training cost in all (issue 31's "training time
    stated"): the checkpoint keeps the seconds so far, and the resumed run's epochs count on from them."""
    settings = TrainSettings.recipe_default("sgd", epochs=2)
    checkpoint = tmp_path / "ckpt.pt"
    steps_per_epoch = -(-len(digits.train) // settings.batch_size)
    with pytest.raises(KeyboardInterrupt):
        _trained(digits, settings, checkpoint, _Interrupt(steps_per_epoch + 5))
    state = torch.load(checkpoint, weights_only=False)
    state["seconds"] = 1000.0  # as if the first session had trained its epoch for that long
    torch.save(state, checkpoint)
    seen: list[tuple[int, float]] = []
    module = load_model("resnet20", (1, 8, 8), 10, width=0.25).module
    initialize(module, 0)
    generator = torch.Generator().manual_seed(0)
    train(module, digits, settings, generator, None, checkpoint, on_epoch=lambda e, _loss, s: seen.append((e, s)))
    assert [epoch for epoch, _ in seen] == [2] and 1000.0 < seen[0][1] < 1000.0 + 120
    assert torch.load(checkpoint, weights_only=False)["seconds"] == seen[0][1]


DEFAULT = BASE[:-3]  # test_train_cli's run without its "--recipe adam --no-augment"


def test_train_defaults_to_sgd_with_augmentation_and_keeps_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *DEFAULT, "-o", str(tmp_path / "sgd.pt"), "--json")
    assert code == 0, err
    assert {k: json.loads(out)[k] for k in ("recipe", "augment", "lr")} == {
        "recipe": "sgd",
        "augment": True,
        "lr": 0.05,
    }
    code, out, err = run(
        capsys, *DEFAULT, "--recipe", "adam", "--lr", "0.002", "--no-augment", "-o", str(tmp_path / "adam.pt"), "--json"
    )
    assert code == 0, err
    assert {k: json.loads(out)[k] for k in ("recipe", "augment", "lr")} == {
        "recipe": "adam",
        "augment": False,
        "lr": 0.002,
    }
    assert load_saved(tmp_path / "adam.pt").meta["training"]["lr"] == 0.002


def test_train_and_ep_train_default_to_the_measured_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """sgd with augmentation, 12 epochs: the recipe that took resnet20 to 93.31% on Fashion-MNIST (issue 31,
    bench/results/pruning-baselines.md); the command and the API agree on it."""
    import inspect

    import edgeprune as ep
    from edgeprune.api import training
    from edgeprune.cli import main

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(ep, "train", lambda *_args, **kwargs: calls.append(kwargs) or {"accuracy": 0.5, "seconds": 1})
    monkeypatch.setattr("edgeprune.cli.pruning.set_threads", lambda _threads: None)
    with pytest.raises(SystemExit) as done:
        main(["train", "resnet20", "--data", "digits", "-o", "m.pt", "--json"])
    assert done.value.code in (0, None)
    measured = {"recipe": "sgd", "augment": True, "epochs": 12}
    assert {key: calls[0][key] for key in measured} == measured
    signature = inspect.signature(training.train).parameters
    assert {key: signature[key].default for key in measured} == measured


@pytest.mark.parametrize(
    ("extra", "message"),
    [(("--recipe", "rmsprop"), "unknown training recipe 'rmsprop'"), (("--label-smoothing", "1.5"), "[0, 1)")],
)
def test_bad_recipe_options_fail_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, *DEFAULT, *extra, "-o", str(tmp_path / "m.pt"))
    assert code != 0 and message in out + err
    assert list(tmp_path.iterdir()) == []
