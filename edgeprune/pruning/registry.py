"""Registries of pruning strategies by name, the way `edgeprune.devices.base` registers device kinds.

A criterion, a method or a budget kind is one class registered under the name the CLI and the API take; the
names list themselves in registration order (for `--help` and "choose one of" hints), and an unknown name is
a clear error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgeprune.errors import EdgepruneError

T = TypeVar("T")


class Registry(Generic[T]):
    """The classes of one role (`role`: 'criterion', 'method', 'budget kind'), by name."""

    def __init__(self, role: str) -> None:
        self.role = role
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: make the class available as `name` (set as its `name` attribute)."""

        def add(cls: type[T]) -> type[T]:
            if name in self._classes and self._classes[name] is not cls:
                raise EdgepruneError(f"{self.role} '{name}' is registered twice")
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return add

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._classes))

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def get(self, name: str) -> type[T]:
        """The class registered as `name`."""
        if name not in self._classes:
            raise EdgepruneError(f"unknown {self.role} '{name}'", hint=f"choose one of {', '.join(self)}")
        return self._classes[name]
