"""The built-in `images` generator: deterministic abstract PNGs from a prompt and a seed.

Each image is an interference pattern of a few plane waves, coloured through a palette,
all computed with numpy over the whole pixel grid at once (a 1024x1024 image takes tens
of milliseconds, not the seconds a per-pixel loop would). Prompt, seed and image index
fully determine the pixels, so a retried job produces byte-identical files.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .base import FieldErrors, Generator, GeneratorContext, OutputFile

PROMPT_MAX = 500
COUNT_RANGE = (1, 16)
SIZE_RANGE = (64, 1024)
SEED_RANGE = (0, 2**63 - 1)
DEFAULTS = {"count": 4, "width": 512, "height": 512}
WAVES = 5


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
        elif "\x00" in prompt:
            errors["prompt"] = "must not contain NUL characters"
        else:
            clean["prompt"] = prompt
        for field, bounds in (
            ("count", COUNT_RANGE),
            ("width", SIZE_RANGE),
            ("height", SIZE_RANGE),
        ):
            value = params.get(field, DEFAULTS[field])
            if _is_int_within(value, bounds):
                clean[field] = value
            else:
                errors[field] = f"an integer from {bounds[0]} to {bounds[1]}"
        seed = params.get("seed")
        if seed is None:
            clean["seed"] = secrets.randbelow(2**32)
        elif _is_int_within(seed, SEED_RANGE):
            clean["seed"] = seed
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
            png = render_png(
                params["prompt"], params["seed"], index, params["width"], params["height"]
            )
            yield OutputFile(f"image-{index + 1:02d}.png", png)
        context.progress("rendering", 100, f"rendered {count} images", step=count, total=count)

    def params_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["prompt"],
            "properties": {
                "prompt": {"type": "string", "minLength": 1, "maxLength": PROMPT_MAX},
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
    digest = hashlib.sha256(f"{seed}\x00{index}\x00{prompt}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:16], "big"))
    pixels = _palette_map(_wave_field(rng, width, height), rng)
    image = Image.fromarray(pixels, "RGB")
    _caption(image, prompt)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _wave_field(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A (height, width) field in [0, 1]: the sum of a few random plane waves."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x /= max(width, height)
    y /= max(width, height)
    field = np.zeros((height, width), dtype=np.float32)
    for _ in range(WAVES):
        angle = rng.uniform(0, 2 * np.pi)
        frequency = rng.uniform(2, 14)
        phase = rng.uniform(0, 2 * np.pi)
        field += np.sin(frequency * (x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi + phase)
    low, high = field.min(), field.max()
    return (field - low) / (high - low + 1e-6)


def _palette_map(field: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour a [0, 1] field through a random three-stop gradient."""
    stops = rng.integers(0, 256, size=(3, 3)).astype(np.float32)
    lower = field[..., None] < 0.5
    t = np.where(lower, field[..., None] * 2, field[..., None] * 2 - 1)
    rgb = np.where(
        lower, stops[0] + (stops[1] - stops[0]) * t, stops[1] + (stops[2] - stops[1]) * t
    )
    return rgb.astype(np.uint8)


def _caption(image: Image.Image, prompt: str) -> None:
    draw = ImageDraw.Draw(image)
    text = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    draw.rectangle((0, image.height - 18, image.width, image.height), fill=(0, 0, 0))
    draw.text((4, image.height - 15), text, fill=(255, 255, 255))


def _is_int_within(value: Any, bounds: tuple[int, int]) -> bool:
    return (
        isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]
    )
