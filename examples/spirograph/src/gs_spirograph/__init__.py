"""The `spirograph` generator: hypotrochoid curves, one SVG file per drawing.

Everything a generator needs is here: a name, parameter validation that returns field
errors, a JSON Schema for clients, progress reports, cancellation checkpoints, and files
yielded one at a time. It is `cpu_bound` (pure-Python maths), so the service runs it in a
worker process: the class is stateless and importable, hence picklable.
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

from app.generation.generators import (
    FieldErrors,
    Generator,
    GeneratorContext,
    OutputFile,
    whole_number,
)

COUNT = (1, 12)
SIZE = (128, 2048)
DETAIL = (36, 3600)  # points per loop of the curve
SEED = (-(2**63), 2**63 - 1)  # a 64-bit seed


class SpirographGenerator(Generator):
    name = "spirograph"
    description = "Spirograph drawings (hypotrochoids) as SVG files, one per drawing."
    cpu_bound = True

    def validate(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], FieldErrors]:
        errors: FieldErrors = {}
        for unknown in sorted(set(params) - {"count", "size", "detail", "seed"}):
            errors[unknown] = "unknown parameter"
        defaults = {"count": 4, "size": 512, "detail": 180}
        clean = {}
        for field, (low, high) in (("count", COUNT), ("size", SIZE), ("detail", DETAIL)):
            clean[field] = whole_number(params.get(field, defaults[field]), low, high)
            if clean[field] is None:
                errors[field] = f"an integer from {low} to {high}"
        seed = params.get("seed")
        # Fix the seed now, so a retried job draws exactly the same curves.
        clean["seed"] = secrets.randbelow(2**32) if seed is None else whole_number(seed, *SEED)
        if clean["seed"] is None:
            errors["seed"] = f"an integer from {SEED[0]} to {SEED[1]}, or null for a random one"
        return clean, errors

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        count = params["count"]
        rng = random.Random(params["seed"])
        for index in range(count):
            context.check_cancelled()  # a checkpoint: cancellation takes effect here
            context.progress(
                "drawing",
                100 * index / count,
                f"drawing {index + 1} of {count}",
                step=index,
                total=count,
            )
            svg = draw(rng, params["size"], params["detail"])
            yield OutputFile(f"spiro-{index + 1:02d}.svg", svg.encode())
        context.progress("drawing", 100, f"drew {count}", step=count, total=count)

    def params_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "count": {
                    "type": "integer",
                    "minimum": COUNT[0],
                    "maximum": COUNT[1],
                    "default": 4,
                },
                "size": {"type": "integer", "minimum": SIZE[0], "maximum": SIZE[1], "default": 512},
                "detail": {
                    "type": "integer",
                    "minimum": DETAIL[0],
                    "maximum": DETAIL[1],
                    "default": 180,
                    "description": "points per loop of the curve",
                },
                "seed": {"type": ["integer", "null"], "minimum": SEED[0], "maximum": SEED[1]},
            },
        }

    def estimate_seconds(self, params: Mapping[str, Any]) -> float:
        return 0.0001 * params["count"] * params["detail"]

    def manifest_extra(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"seed": params["seed"]}


def draw(rng: random.Random, size: int, detail: int) -> str:
    """One hypotrochoid: a circle of radius r rolling inside one of radius R, traced by a
    pen at distance d from its centre, until the curve closes."""
    big, small = rng.randint(60, 120), rng.randint(15, 59)
    pen = rng.uniform(0.3, 1.2) * small
    loops = small // math.gcd(big, small)
    scale = size / 2 / (big - small + pen) * 0.95
    points = []
    for step in range(loops * detail + 1):
        t = 2 * math.pi * step / detail
        x = (big - small) * math.cos(t) + pen * math.cos((big - small) / small * t)
        y = (big - small) * math.sin(t) - pen * math.sin((big - small) / small * t)
        points.append(f"{size / 2 + x * scale:.1f},{size / 2 + y * scale:.1f}")
    colour = f"hsl({rng.randrange(360)},70%,45%)"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 {size} {size}"><rect width="100%" height="100%" fill="white"/>'
        f'<polyline fill="none" stroke="{colour}" stroke-width="1" '
        f'points="{" ".join(points)}"/></svg>'
    )
