"""Run-time estimates and the ETAs derived from them.

Each generator's run time is tracked as an exponentially weighted mean of measured runs,
so estimates follow the machine they run on. Before the first measurement a generator's
own `estimate_seconds()` (or a default) stands in.
"""

from __future__ import annotations

import threading

DEFAULT_RUN_SECONDS = 5.0
SMOOTHING = 0.3


class RunTimeEstimator:
    def __init__(self) -> None:
        self._mean: dict[str, float] = {}
        self._lock = threading.Lock()

    def record(self, generator: str, seconds: float) -> None:
        with self._lock:
            previous = self._mean.get(generator)
            self._mean[generator] = (
                seconds if previous is None else previous + SMOOTHING * (seconds - previous)
            )

    def run_seconds(self, generator: str, prior: float | None = None) -> float:
        with self._lock:
            measured = self._mean.get(generator)
        if measured is not None:
            return measured
        return prior if prior is not None else DEFAULT_RUN_SECONDS

    def typical_seconds(self) -> float:
        """The mean over generators measured so far (for questions not about one job)."""
        with self._lock:
            means = list(self._mean.values())
        return sum(means) / len(means) if means else DEFAULT_RUN_SECONDS


def queued_eta(position: int, running: int, workers: int, run_seconds: float) -> float:
    """Seconds until a queued job finishes: the work ahead of it spread over the workers,
    then its own run. `position` jobs are queued ahead, `running` jobs hold workers."""
    ahead = position + running
    waves_before_start = max(0, ahead - workers + 1)
    return waves_before_start * run_seconds / workers + run_seconds


def running_eta(percent: float, run_seconds: float) -> float:
    """Seconds until a running job finishes, from its reported progress."""
    return max(0.0, run_seconds * (1 - percent / 100))
