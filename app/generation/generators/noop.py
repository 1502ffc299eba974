"""The built-in `noop` generator: waits `ms` milliseconds and returns one tiny file.

It exists to measure the service rather than a model: with `ms=0` a job's whole cost is
the queue, the database writes and the result ZIP (bench/ uses it for throughput and
dispatch latency), and with a larger `ms` it holds a worker without using the CPU.
The wait is sliced so cancellation and shutdown stop it within one slice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from .base import FieldErrors, Generator, GeneratorContext, OutputFile, whole_number

MS_RANGE = (0, 600_000)
SLICE_SECONDS = 0.05


class NoopGenerator(Generator):
    name = "noop"
    description = "Does nothing for `ms` milliseconds, then returns one tiny file (benchmarks)."

    def validate(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], FieldErrors]:
        errors: FieldErrors = {name: "unknown parameter" for name in sorted(set(params) - {"ms"})}
        ms = whole_number(params.get("ms", 0), *MS_RANGE)
        if ms is None:
            errors["ms"] = f"an integer from {MS_RANGE[0]} to {MS_RANGE[1]}"
            return {}, errors
        return {"ms": ms}, errors

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        deadline = time.monotonic() + params["ms"] / 1000
        while (left := deadline - time.monotonic()) > 0:
            context.check_cancelled()
            time.sleep(min(left, SLICE_SECONDS))
        context.check_cancelled()
        yield OutputFile("noop.txt", b"ok\n")

    def params_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "ms": {"type": "integer", "minimum": MS_RANGE[0], "maximum": MS_RANGE[1]},
            },
        }

    def estimate_seconds(self, params: Mapping[str, Any]) -> float:
        return params["ms"] / 1000
