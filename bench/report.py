"""The shape of a scenario's result, and the markdown table made from all of them.

A scenario's `run()` returns `{"scenario", "title", "rows": [...], ...details}`; each row
is one figure compared with the floor (see `row()`). The suite renders every row into
one table; details stay in the JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .stats import ratios, summary


def row(
    backend: str,
    metric: str,
    ours: Sequence[float],
    floor: Sequence[float] | None = None,
    *,
    unit: str,
    target: str = "",
    met: bool | None = None,
    digits: int = 3,
) -> dict[str, Any]:
    """One figure over repetitions: ours, the floor measured beside it, and their ratio."""
    return {
        "backend": backend,
        "metric": metric,
        "unit": unit,
        "ours": summary(ours, digits),
        "floor": summary(floor, digits) if floor else None,
        "ratio": summary(ratios(ours, floor), 3) if floor else None,
        "target": target,
        "met": met,
    }


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| scenario | db | metric | ours: median (min–max) | floor or baseline | ratio | target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        if result.get("skipped"):
            lines.append(f"| {result['title']} | | skipped: {result['skipped']} | | | | |")
            continue
        if result.get("failed"):
            lines.append(f"| {result['title']} | | failed: {result['failed']} | | | | |")
            continue
        if not result.get("rows"):
            lines.append(f"| {result['title']} | | figures in latest.json | | | | |")
            continue
        for item in result.get("rows", []):
            lines.append(_line(result["title"], item))
    return "\n".join(lines) + "\n"


def _line(title: str, item: dict[str, Any]) -> str:
    ours = item["ours"]
    spread = f"{_fmt(ours['median'])} ({_fmt(ours['min'])}–{_fmt(ours['max'])}) {item['unit']}"
    floor = f"{_fmt(item['floor']['median'])} {item['unit']}" if item["floor"] else "–"
    ratio = f"{item['ratio']['median']:.2f}x" if item["ratio"] else "–"
    verdict = {True: " ✅", False: " ❌", None: ""}[item["met"]]
    target = (item["target"] + verdict) if item["target"] else "–"
    return (
        f"| {title} | {item['backend']} | {item['metric']} | {spread} | {floor} | {ratio} "
        f"| {target} |"
    )


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
