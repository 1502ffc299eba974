"""Generators by name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .base import Generator
from .images import ImagesGenerator


class GeneratorRegistry:
    def __init__(self, generators: Iterable[Generator] = ()) -> None:
        self._generators: dict[str, Generator] = {}
        for generator in generators:
            self.register(generator)

    def register(self, generator: Generator) -> None:
        if generator.name in self._generators:
            raise ValueError(f"a generator named {generator.name!r} is already registered")
        self._generators[generator.name] = generator

    def get(self, name: str) -> Generator | None:
        return self._generators.get(name)

    def names(self) -> list[str]:
        return sorted(self._generators)

    def __iter__(self) -> Iterator[Generator]:
        return iter(self._generators.values())


def default_registry() -> GeneratorRegistry:
    """The built-in generators."""
    return GeneratorRegistry([ImagesGenerator()])
