"""What every stage takes first: a device by name, and a model given as a module with an example input or as a
MODEL string the way the CLI takes it (zoo name, path/to/file.py:factory, a saved model file)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from edgeprune.errors import EdgepruneError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeprune.devices.base import Device
    from edgeprune.models.io import ModelBundle

Shape = tuple[int, int, int] | str  # one image, CxHxW: (3, 32, 32) or "3x32x32" as --input-shape takes it


def device(name: str) -> Device:
    """A device by name, as `--device` takes it: `local`, a profile name, or a path to a .toml profile.

    `with ep.device("local") as dev:` keeps its RPC servers (the local farm) up for the block; without it,
    each stage starts the farm for its own duration.
    """
    from edgeprune.devices.profile import load_device

    return load_device(name)


def parse_shape(shape: Shape | None) -> tuple[int, int, int] | None:
    """An input shape as a tuple; a string is read as `--input-shape` reads it (and refused as it is)."""
    from edgeprune.models.io import parse_input_shape

    if shape is None or isinstance(shape, tuple):
        return shape
    return parse_input_shape(shape)


def image_shape(example_input: torch.Tensor) -> tuple[int, int, int]:
    """One image's CxHxW, from an example input batch [N, C, H, W] (refused when it is not one)."""
    shape = tuple(int(d) for d in getattr(example_input, "shape", ()))
    if len(shape) != 4:
        raise EdgepruneError(
            f"example_input must be an image batch [N, C, H, W], got shape {list(shape)}",
            hint="e.g. torch.randn(1, 3, 32, 32)",
        )
    return shape[1], shape[2], shape[3]


def need_device(given: Device | None, stage: str) -> Device:
    """The device a stage cannot run without: positional in the existing signatures, but after an
    `example_input` that a MODEL string does not need, so it may come as `device=`."""
    if given is None:
        raise EdgepruneError(f"ep.{stage} needs a device", hint='pass device=ep.device("local") (or a profile name)')
    return given


def bundle(
    model: nn.Module | str,
    example_input: torch.Tensor | None = None,
    *,
    input_shape: Shape | None = None,
    classes: int | None = None,
    width: float = 1.0,
) -> ModelBundle:
    """The model as the stages take it: an fx graph with its input shape.

    A module is traced with the shape of `example_input` (an image batch); a MODEL string resolves as the
    CLI's MODEL argument, with `input_shape`, `classes` and `width` as its --input-shape, --classes and
    --width, or with the shape of `example_input` when one is given.
    """
    from torch import nn

    from edgeprune.models.io import ModelBundle, check_forward, load_model, to_graph_module

    if example_input is None:
        if isinstance(model, str):
            return load_model(model, parse_shape(input_shape), classes, width)
        raise EdgepruneError("a module needs an example_input to be traced with", hint="e.g. torch.randn(1, 3, 32, 32)")
    image = image_shape(example_input)
    if isinstance(model, str):
        return load_model(model, image, classes, width)
    if not isinstance(model, nn.Module):
        raise EdgepruneError(f"model must be a torch.nn.Module or a MODEL string, got {type(model).__name__}")
    # a copy: tracing shares the layers with the model, and stages switch them to eval mode, evaluate the copy
    # or fine-tune it, none of which may touch the user's model
    own = copy.deepcopy(model)
    classes = check_forward(own, image, classes)
    graph = to_graph_module(own, image)
    meta = {"arch": type(model).__name__, "trained": True, "source": f"python:{type(model).__name__}"}
    return ModelBundle(graph, image, classes, meta)
