"""Pluggable generators: the contract, the registry and the built-ins."""

from .base import FieldErrors, Generator, GeneratorContext, OutputFile
from .registry import GeneratorRegistry, default_registry

__all__ = [
    "FieldErrors",
    "Generator",
    "GeneratorContext",
    "GeneratorRegistry",
    "OutputFile",
    "default_registry",
]
