"""The pixels of the `images` generator (images.py): wave fields through a palette.

Its own module so that numpy and Pillow load only where images are rendered.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, ImageDraw

WAVES = 5


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
