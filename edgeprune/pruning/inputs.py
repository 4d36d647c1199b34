"""A model and the data it trains and prunes on, resolved together: the data set decides the input size of a
zoo model, and a saved model decides (and may name) its data set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune.errors import EdgepruneError


def model_and_data(
    model: str,
    shape: tuple[int, int, int] | None,
    data_spec: str | None,
    classes: int | None,
    width: float,
    seed: int,
    data_dir: Path | None,
    limit: int | None,
) -> tuple[Any, Any]:
    """The model bundle and the data adapted to it. A saved model fixes the input shape and may name its data
    set; a zoo / .py model is built for the data set (`default_input_shape` unless `shape`)."""
    from edgeprune.data import default_input_shape, load_dataset, parse_spec
    from edgeprune.models.io import load_model

    if data_spec:
        parse_spec(data_spec)
    if Path(model).is_file():
        bundle = load_model(model)
        if shape is not None and shape != bundle.input_shape:
            raise EdgepruneError(
                f"--input-shape {'x'.join(map(str, shape))} does not match the saved model's input "
                f"{list(bundle.input_shape)}",
                hint="a saved model keeps its input shape; drop --input-shape",
            )
        spec = data_spec or bundle.meta.get("dataset")
        if not spec:
            raise EdgepruneError("which data? pass --data (the model does not record its training data set)")
        return bundle, load_dataset(spec, bundle.input_shape, seed, data_dir, limit)
    if not data_spec:
        raise EdgepruneError("pass --data: the data set to train and evaluate on")
    shape = shape or default_input_shape(data_spec)
    dataset = load_dataset(data_spec, shape, seed, data_dir, limit)
    return load_model(model, shape, dataset.num_classes if classes is None else classes, width), dataset
