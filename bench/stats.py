"""Summaries of repeated measurements: median and spread, and latency percentiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def summary(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """Median, min and max over repetitions, with every run kept for the record."""
    if not values:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(value, digits) for value in values],
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, `q` in 0..100."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ratios(ours: Sequence[float], floor: Sequence[float]) -> list[float]:
    """Per-repetition ratios: each of ours over the floor measured next to it."""
    return [mine / base for mine, base in zip(ours, floor, strict=True) if base]
