"""Line charts of the queue's history, rendered here as SVG for the console page.

Why server-side SVG and not a charting library in the browser: the console needs three
small line charts that change every few seconds. About a hundred lines of Python draw
them; a library would be tens of kilobytes of third-party JavaScript to vet, pin and
update, for the same lines. The SVG is plain markup: it inherits the page's colours
(light and dark) through CSS classes, needs no script to display, scales with its box,
and is tested here without a browser. Each chart is rendered once per history change
and shared by every open console (console_stream.py).

Only numbers and fixed labels go into the markup, and every label is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import escape

# The size the console shows a chart at (three side by side), so labels stay legible.
WIDTH = 420
HEIGHT = 170
# Room for the y labels (left) and the x labels (below).
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 22


@dataclass(frozen=True)
class Series:
    """One line: its legend name, its CSS class (its colour), and (time, value) points;
    a None value breaks the line (no data in that interval)."""

    name: str
    css: str
    points: Sequence[tuple[float, float | None]]


def line_chart(
    title: str, series: Sequence[Series], start: float, end: float, *, unit: str = ""
) -> str:
    """An SVG chart of `series` over [start, end] (epoch seconds), titled `title`; the
    y axis starts at 0 and ends at a round number above the largest value."""
    top = nice_ceiling(max((v for s in series for _, v in s.points if v is not None), default=0.0))
    x = _scale(start, end, LEFT, WIDTH - RIGHT)
    y = _scale(0.0, top, HEIGHT - BOTTOM, TOP)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        *_grid(top, y, unit),
        *_time_labels(start, end, x),
    ]
    for line in series:
        path = _path(line.points, x, y)
        if path:
            parts.append(
                f'<path class="line {escape(line.css)}" d="{path}">'
                f"<title>{escape(line.name)}</title></path>"
            )
    if not any(v is not None for s in series for _, v in s.points):
        parts.append(
            f'<text class="empty" x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" '
            'text-anchor="middle">no samples yet</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `value`
    (at least 1), so that axis labels are round."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


Scale = Callable[[float], float]


def _scale(low: float, high: float, out_low: float, out_high: float) -> Scale:
    span = (high - low) or 1.0

    def scale(value: float) -> float:
        return out_low + (value - low) / span * (out_high - out_low)

    return scale


def _grid(top: float, y: Scale, unit: str) -> list[str]:
    lines = []
    for fraction in (0.0, 0.5, 1.0):
        value = top * fraction
        at = y(value)
        lines.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{at:.1f}" y2="{at:.1f}"/>'
        )
        lines.append(
            f'<text class="axis" x="{LEFT - 6}" y="{at + 4:.1f}" text-anchor="end">'
            f"{escape(_number(value))}{escape(unit)}</text>"
        )
    return lines


def _time_labels(start: float, end: float, x: Scale) -> list[str]:
    minutes = round((end - start) / 60)
    labels = []
    for fraction, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        ago = round(minutes * (1 - fraction))
        text = "now" if ago == 0 else f"−{ago} min"
        labels.append(
            f'<text class="axis" x="{x(start + fraction * (end - start)):.1f}" '
            f'y="{HEIGHT - 6}" text-anchor="{anchor}">{text}</text>'
        )
    return labels


def _path(points: Sequence[tuple[float, float | None]], x: Scale, y: Scale) -> str:
    """M/L commands through the points; a None starts a new segment."""
    commands, pen_down = [], False
    for at, value in points:
        if value is None:
            pen_down = False
            continue
        commands.append(f"{'L' if pen_down else 'M'}{x(at):.1f},{y(value):.1f}")
        pen_down = True
    return "".join(commands)


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"
