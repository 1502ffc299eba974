"""The generator contract: what the service needs from anything that produces files.

A generator validates its parameters (returning field errors, never raising for bad
input), then `run()`s with a `GeneratorContext` through which it reports progress and
learns about cancellation. It yields `OutputFile`s; the service writes them into the
job's ZIP as they come, so a generator never has to hold all its output in memory.
To fail a job with a message meant for the user, raise `GeneratorError`.

One instance serves every job, from several worker threads at once: keep per-job state
in `run()`'s locals. A `cpu_bound` generator runs in a worker process instead (so it
cannot starve the web threads of the GIL); its instance is pickled into that process,
so it must be picklable and its class importable by module path.
docs/generators.md is the guide; third-party generators register through the entry-point
group in `registry.ENTRY_POINT_GROUP`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from ..errors import GeneratorError

__all__ = [
    "FieldErrors",
    "Generator",
    "GeneratorContext",
    "GeneratorError",
    "OutputFile",
    "whole_number",
]

FieldErrors = dict[str, str]


def whole_number(value: Any, low: int, high: int) -> int | None:
    """`value` as an int if it is a whole number from `low` to `high`, else None.

    A whole number as JSON Schema's "integer" means it: JSON does not tell 3 from 3.0, and
    the schema a generator publishes (params_schema) accepts both, so validate must too.
    Never a bool, although Python counts True as 1.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if low <= value <= high else None


@dataclass(frozen=True)
class OutputFile:
    """One file of a job's result. `name` is chosen by the generator, never by the client."""

    name: str
    data: bytes


class GeneratorContext(Protocol):
    def progress(
        self,
        stage: str,
        percent: float,
        message: str = "",
        *,
        step: int | None = None,
        total: int | None = None,
    ) -> None:
        """Report how far the job is (0..100, never going back); cheap to call often."""

    def preview(self, data: bytes, content_type: str = "image/png") -> None:
        """Offer an image of the work in progress (PNG, JPEG, WebP or GIF, at most
        2 MiB). The latest replaces the one before; watchers see a few a second however
        often it is called; it is deleted when the job ends and never joins the result."""

    def check_cancelled(self) -> None:
        """Raise `JobCancelled` if the job should stop; call between steps."""


class Generator(abc.ABC):
    """Base class of generators. Subclasses set `name` and implement the two methods."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    # CPU-bound generators hold the GIL while they work, so the service runs them in a
    # worker process; I/O-bound ones (waiting on a remote API) run in the worker thread.
    cpu_bound: ClassVar[bool] = False

    @abc.abstractmethod
    def validate(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], FieldErrors]:
        """Return (normalised params, field errors). Normalised params must make `run`
        deterministic, e.g. by filling in a random seed once, here."""

    @abc.abstractmethod
    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterable[OutputFile]:
        """Produce the job's files from normalised params."""

    def params_schema(self) -> dict[str, Any]:
        """JSON Schema of `params`, published for clients."""
        return {"type": "object"}

    def estimate_seconds(self, params: Mapping[str, Any]) -> float | None:
        """A prior guess of the run time before any run has been measured."""
        return None

    def manifest_extra(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Fields this generator adds to the result's manifest.json."""
        return {}
