"""A named registry of functions (pipelines, exporters, runners): targets pick entries by name in their TOML."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from harmonizer_deploy.core.errors import HarmonizerError

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@PIPELINES.register("cpu")`."""

        def wrap(fn: T) -> T:
            self[name] = fn
            return fn

        return wrap

    def lookup(self, name: str) -> T:
        """The entry called `name`, or one clear error listing the known ones."""
        if name not in self:
            raise HarmonizerError(f"unknown {self.kind} {name!r}", f"known {self.kind}s: {', '.join(sorted(self))}")
        return self[name]
