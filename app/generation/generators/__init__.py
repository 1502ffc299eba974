"""Pluggable generators: the contract, the registry and the built-ins."""

from .base import (
    FieldErrors,
    Generator,
    GeneratorContext,
    GeneratorError,
    OutputFile,
    whole_number,
)
from .registry import ENTRY_POINT_GROUP, GeneratorRegistry, default_registry

__all__ = [
    "ENTRY_POINT_GROUP",
    "FieldErrors",
    "whole_number",
    "Generator",
    "GeneratorContext",
    "GeneratorError",
    "GeneratorRegistry",
    "OutputFile",
    "default_registry",
]
