"""`ep.train`: a baseline trained on an offline data set, saved where the next stages read it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprune.api.models import Shape, parse_shape
from edgeprune.errors import EdgepruneError
from edgeprune.training_defaults import AUGMENT, EPOCHS, RECIPE

if TYPE_CHECKING:
    from rich.progress import Progress


def sidecar(output: Path, suffix: str) -> Path:
    """A file that belongs to the model file `output`: model.pt -> model.train-checkpoint.pt, model.legr.json."""
    return output.with_name(output.stem + suffix)


def train(
    model: str,
    output: str | Path,
    *,
    data: str | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    input_shape: Shape | None = None,
    classes: int | None = None,
    width: float = 1.0,
    epochs: int = EPOCHS,
    batch_size: int = 64,
    lr: float | None = None,
    recipe: str = RECIPE,
    label_smoothing: float | None = None,
    augment: bool = AUGMENT,
    seed: int = 0,
    progress: Progress | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train MODEL (a zoo name, path/to/file.py:factory, or a saved model to train on) on a data set (digits,
    fashion-mnist, cifar10:DIR, imagefolder:DIR; a saved model may name its own) and save it to `output`
    (`edgeprune train`). An interrupted run resumes from the epoch checkpoint beside `output`. Returns what
    `train --json` prints: test accuracy, epochs, seconds, the data set, the recipe.

    `recipe` is how (edgeprune.pruning.finetune.RECIPES): "sgd" (the default: Nesterov SGD, warm-up and cosine,
    weight decay) or "adam" (the first recipe); `augment` (on by default, with any recipe) adds random crops and,
    where the data set allows, flips; the defaults are the measured better recipe (RECIPE, EPOCHS, AUGMENT
    above). `lr` and `label_smoothing` left None are the recipe's own."""
    from edgeprune.models.io import save_model
    from edgeprune.pruning import TrainSettings, train_bundle
    from edgeprune.pruning.inputs import model_and_data

    if epochs < 1:
        raise EdgepruneError("--epochs must be >= 1")
    settings = TrainSettings.recipe_default(
        recipe, epochs=epochs, batch_size=batch_size, lr=lr, label_smoothing=label_smoothing, augment=augment
    )
    settings.check()
    where = Path(data_dir) if data_dir is not None else None
    bundle, dataset = model_and_data(model, parse_shape(input_shape), data, classes, width, seed, where, limit)
    saved = Path(output)
    checkpoint = sidecar(saved, ".train-checkpoint.pt")
    sizes = dataset.sizes
    (on_stage or (lambda _text: None))(
        f"training {bundle.name} {list(bundle.input_shape)} on {dataset.spec} "
        f"({sizes['train']} train / {sizes['val']} val / {sizes['test']} test images)"
    )
    trained, report = train_bundle(bundle, dataset, settings, seed, progress, checkpoint)
    save_model(trained, saved)
    checkpoint.unlink(missing_ok=True)
    recipe = {"recipe": settings.recipe, "augment": settings.augment, "lr": settings.lr}
    return {"output": str(saved), **report, "dataset": dataset.spec, **recipe}
