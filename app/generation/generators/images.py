"""The built-in `images` generator: deterministic abstract PNGs from a prompt and a seed.

Each image is an interference pattern of a few plane waves, coloured through a palette,
all computed with numpy over the whole pixel grid at once (a 1024x1024 image takes tens
of milliseconds, not the seconds a per-pixel loop would). Prompt, seed and image index
fully determine the pixels, so a retried job produces byte-identical files.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

from .base import FieldErrors, Generator, GeneratorContext, OutputFile, whole_number

PROMPT_MAX = 500
COUNT_RANGE = (1, 16)
SIZE_RANGE = (64, 1024)
SEED_RANGE = (0, 2**63 - 1)
DEFAULTS = {"count": 4, "width": 512, "height": 512}
PREVIEW_SCALE = 8
# Python's whitespace (str.isspace), spelled out: the published schema carries the same
# pattern, and JSON Schema's `\s` is a slightly different set.
_SPACE = "\t-\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# A prompt: something other than whitespace, and no NUL anywhere.
PROMPT_PATTERN = f"^[^\x00]*[^{_SPACE}\x00][^\x00]*$"


class ImagesGenerator(Generator):
    name = "images"
    description = "Deterministic abstract PNG images rendered from a prompt and a seed."
    cpu_bound = True

    def validate(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], FieldErrors]:
        errors: FieldErrors = {}
        clean: dict[str, Any] = {}
        for unknown in sorted(set(params) - {"prompt", "count", "width", "height", "seed"}):
            errors[unknown] = "unknown parameter"
        prompt = params.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            errors["prompt"] = "required: a non-empty string"
        elif len(prompt) > PROMPT_MAX:
            errors["prompt"] = f"at most {PROMPT_MAX} characters"
        elif not re.fullmatch(PROMPT_PATTERN, prompt):
            errors["prompt"] = "must not contain NUL characters"
        else:
            clean["prompt"] = prompt
        for field, bounds in (
            ("count", COUNT_RANGE),
            ("width", SIZE_RANGE),
            ("height", SIZE_RANGE),
        ):
            value = whole_number(params.get(field, DEFAULTS[field]), *bounds)
            if value is not None:
                clean[field] = value
            else:
                errors[field] = f"an integer from {bounds[0]} to {bounds[1]}"
        seed = params.get("seed")
        if seed is None:
            clean["seed"] = secrets.randbelow(2**32)
        elif (whole_seed := whole_number(seed, *SEED_RANGE)) is not None:
            clean["seed"] = whole_seed
        else:
            errors["seed"] = f"an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}, or null"
        return clean, errors

    def run(self, params: Mapping[str, Any], context: GeneratorContext) -> Iterator[OutputFile]:
        count = params["count"]
        for index in range(count):
            context.check_cancelled()
            context.progress(
                "rendering",
                100 * index / count,
                f"image {index + 1} of {count}",
                step=index,
                total=count,
            )
            picture = (params["prompt"], params["seed"], index)
            # A coarse render first (1/64 of the pixels): what the page shows meanwhile.
            context.preview(render_png(*picture, *coarse(params["width"], params["height"])))
            png = render_png(*picture, params["width"], params["height"])
            yield OutputFile(f"image-{index + 1:02d}.png", png)
        context.progress("rendering", 100, f"rendered {count} images", step=count, total=count)

    def params_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["prompt"],
            "properties": {
                "prompt": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": PROMPT_MAX,
                    "pattern": PROMPT_PATTERN,
                },
                "count": {"type": "integer", "minimum": 1, "maximum": 16, "default": 4},
                "width": {"type": "integer", "minimum": 64, "maximum": 1024, "default": 512},
                "height": {"type": "integer", "minimum": 64, "maximum": 1024, "default": 512},
                "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": SEED_RANGE[1]},
            },
        }

    def estimate_seconds(self, params: Mapping[str, Any]) -> float:
        # About 0.35 s per megapixel (render + PNG) on one core of the reference machine.
        return 0.35 * params["count"] * params["width"] * params["height"] / 1_000_000

    def manifest_extra(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"seed": params["seed"]}


def render_png(prompt: str, seed: int, index: int, width: int, height: int) -> bytes:
    """Render image `index` of a job as PNG bytes."""
    # numpy and Pillow load with the first image, not with the registry: the web process
    # (in process isolation) and the gunicorn master never render.
    from .pixels import render_png as render

    return render(prompt, seed, index, width, height)


def coarse(width: int, height: int) -> tuple[int, int]:
    """The size of an image's preview: the same picture, PREVIEW_SCALE times smaller."""
    return max(8, width // PREVIEW_SCALE), max(8, height // PREVIEW_SCALE)
