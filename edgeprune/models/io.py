"""MODEL arguments and the saved edgeprune model format.

A MODEL is a zoo name, `path/to/file.py:factory` (a user's own architecture) or a saved model file.
Saved models hold a `torch.fx.GraphModule`: its pickle carries the generated forward code plus standard
`torch.nn` layers, so a file loads without the code that defined it, pruned models included, and it stays a
normal module with real Conv2d/BatchNorm2d/Linear children that the pruner can cut.
Loading a saved model unpickles it: load only files you trust, as with any PyTorch checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeprune import atomic
from edgeprune.errors import EdgepruneError
from edgeprune.models import zoo
from edgeprune.network import to_graph_module

FORMAT = "edgeprune-model"
FORMAT_VERSION = 1
DEFAULT_INPUT_SHAPE = (3, 32, 32)
DEFAULT_CLASSES = 10


@dataclass
class ModelBundle:
    """A model with what every stage needs to know about it: input spec, class count, provenance."""

    module: nn.Module
    input_shape: tuple[int, int, int]
    num_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.meta.get("arch", "model"))

    @property
    def trained(self) -> bool:
        return bool(self.meta.get("trained", False))

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, *self.input_shape, generator=torch.Generator().manual_seed(0))


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """'3x32x32' (or '3,32,32') -> (3, 32, 32): channels, height, width of one image."""
    parts = text.replace(",", "x").lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise EdgepruneError(f"--input-shape '{text}' is not CxHxW with positive integers (e.g. 3x32x32)")
    return dims  # type: ignore[return-value]


def check_forward(module: nn.Module, input_shape: tuple[int, int, int], num_classes: int | None = None) -> int:
    """Run one batch through the model; returns the class count. Turns shape mismatches into clear errors."""
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *input_shape))
    except RuntimeError as exc:
        raise EdgepruneError(
            f"the model does not accept input of shape {list(input_shape)}: {str(exc).splitlines()[0]}",
            hint="pass the right --input-shape (CxHxW)",
        ) from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise EdgepruneError(
            f"the model must return logits of shape [batch, classes], got {getattr(out, 'shape', out)}"
        )
    if num_classes is not None and out.shape[1] != num_classes:
        raise EdgepruneError(f"the model returns {out.shape[1]} classes, expected {num_classes}")
    return int(out.shape[1])


@contextlib.contextmanager
def _beside_on_path(folder: Path) -> Iterator[None]:
    """Import a user's file as `python file.py` would: its folder first on `sys.path`, so `from resnet import
    ResNet18` finds the resnet.py beside it. Afterwards `sys.path` is as before, and the new top-level modules
    imported from that folder leave `sys.modules`: another model's folder may hold a different `resnet.py`.
    Packages loaded before (edgeprune itself, when the file sits in a checkout) stay, so their classes keep
    one identity."""
    before = set(sys.modules)
    loaded_roots = {name.partition(".")[0] for name in before}
    saved_path = list(sys.path)
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - before:
            origin = getattr(sys.modules[name], "__file__", None)
            fresh = name.partition(".")[0] not in loaded_roots
            if fresh and origin and Path(origin).resolve().is_relative_to(folder):
                del sys.modules[name]


def _load_factory(spec: str) -> nn.Module:
    file_part, _, factory = spec.rpartition(":")
    path = Path(file_part)
    if not path.is_file():
        raise EdgepruneError(f"model file '{path}' not found (MODEL as path/to/file.py:factory)")
    module_spec = importlib.util.spec_from_file_location(f"edgeprune_user_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise EdgepruneError(f"cannot import '{path}' as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    with _beside_on_path(path.resolve().parent):
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's file may raise anything
            raise EdgepruneError(
                f"importing '{path}' failed: {type(exc).__name__}: {exc}",
                hint="modules it imports must sit beside it or be installed",
            ) from exc
        if not callable(getattr(module, factory, None)):
            raise EdgepruneError(f"'{path}' has no callable '{factory}'")
        try:
            model = getattr(module, factory)()
        except Exception as exc:  # noqa: BLE001 - the user's factory may raise anything
            raise EdgepruneError(
                f"calling '{factory}()' from '{path}' failed: {type(exc).__name__}: {exc}",
                hint="the factory must build the model without arguments",
            ) from exc
    if not isinstance(model, nn.Module):
        raise EdgepruneError(f"'{spec}' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_model(
    spec: str,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    width: float = 1.0,
) -> ModelBundle:
    """Resolve a MODEL argument to a bundle; the module is always an fx GraphModule."""
    if not (math.isfinite(width) and width > 0):
        raise EdgepruneError(f"--width {width}: the width multiplier must be a positive number")
    if num_classes is not None and num_classes < 1:
        raise EdgepruneError(f"--classes {num_classes}: a classifier needs at least one class")
    path = Path(spec)
    if spec in zoo.ZOO:
        shape = input_shape or DEFAULT_INPUT_SHAPE
        classes = num_classes or DEFAULT_CLASSES
        module = zoo.build(spec, shape[0], (shape[1], shape[2]), classes, width)
        meta = {"arch": spec, "width": width, "trained": False, "source": f"zoo:{spec}"}
    elif spec.endswith(".py") or (".py:" in spec):
        if not spec.rpartition(":")[2] or spec.endswith(".py"):
            raise EdgepruneError(f"'{spec}': name the factory function, as path/to/file.py:factory")
        if input_shape is None:
            raise EdgepruneError("a model from a .py file needs --input-shape CxHxW")
        module, shape = _load_factory(spec), input_shape
        classes = check_forward(module, shape, num_classes)
        meta = {"arch": spec.rpartition(":")[2], "trained": False, "source": spec}
    elif path.exists():
        return load_saved(path)
    else:
        raise EdgepruneError(
            f"unknown MODEL '{spec}'",
            hint=f"a zoo name ({', '.join(zoo.ZOO)}), path/to/file.py:factory, or a saved edgeprune model file",
        )
    check_forward(module, shape, classes)
    return ModelBundle(to_graph_module(module, shape), shape, classes, meta)


def save_model(bundle: ModelBundle, path: str | Path) -> Path:
    """Write the bundle atomically; the file loads with `load_saved` anywhere edgeprune is installed."""
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "module": to_graph_module(bundle.module, bundle.input_shape),
        "input_shape": list(bundle.input_shape),
        "num_classes": bundle.num_classes,
        "meta": bundle.meta,
    }
    with atomic.atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_saved(path: str | Path) -> ModelBundle:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise EdgepruneError(f"'{path}' is not a readable model file: {type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise EdgepruneError(
            f"'{path}' is not an edgeprune model file",
            hint="save models with edgeprune (train/prune write them), or pass path/to/file.py:factory",
        )
    if payload.get("version") != FORMAT_VERSION:
        raise EdgepruneError(f"'{path}' has model format version {payload.get('version')}, expected {FORMAT_VERSION}")
    shape = tuple(int(d) for d in payload["input_shape"])
    return ModelBundle(payload["module"], shape, int(payload["num_classes"]), dict(payload.get("meta", {})))  # type: ignore[arg-type]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
