"""Run-time predictions, and how accurate the ETAs built from them turned out to be.

A job's *cost* is its generator's own guess of its run time, `estimate_seconds(params)`
(for images: count x pixels), or DEFAULT_COST_SECONDS for generators without one. The
estimator measures each generator's *seconds per cost unit* on this machine, as the
median of its last WINDOW successful runs (a median shrugs off one slow outlier, such as
a first run that warms caches), so a prediction is `rate x cost`: measured speed, scaled
by this job's size. Before a generator's first run, its rate is 1 (trust its estimate).
"""

from __future__ import annotations

import statistics
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any

from ..generators import Generator, GeneratorRegistry

DEFAULT_COST_SECONDS = 5.0
MIN_COST = 1e-3
WINDOW = 32
ACCURACY_WINDOW = 1000
MAX_PENDING_PREDICTIONS = 100_000


def job_cost(generator: Generator | None, params: Mapping[str, Any]) -> float:
    """The job's size in its generator's cost unit (nominal seconds)."""
    estimate = generator.estimate_seconds(params) if generator is not None else None
    return max(MIN_COST, float(estimate if estimate is not None else DEFAULT_COST_SECONDS))


# A job's cost from its generator's name and its params.
JobCosts = Callable[[str, dict[str, Any]], float]


def job_costs(generators: GeneratorRegistry) -> JobCosts:
    """The one pricing function the queue, the forecast and the runner's bookkeeping
    share: `job_cost` with the generator looked up by name."""

    def cost(generator: str, params: dict[str, Any]) -> float:
        return job_cost(generators.get(generator), params)

    return cost


class RunTimeEstimator:
    def __init__(self) -> None:
        self._rates: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self.version = 0  # bumped by every measurement; forecasts replay when it moves

    def record(self, generator: str, cost: float, seconds: float) -> None:
        """Learn from one successful run of `cost` units that took `seconds`."""
        if seconds <= 0 or cost <= 0:
            return
        with self._lock:
            window = self._rates.setdefault(generator, deque(maxlen=WINDOW))
            window.append(seconds / cost)
            self.version += 1

    def rate(self, generator: str) -> float:
        """Measured seconds per cost unit (1.0 before any run)."""
        with self._lock:
            window = self._rates.get(generator)
            return statistics.median(window) if window else 1.0

    def rates(self) -> dict[str, float]:
        """Every generator's current rate, for forecasts that price many jobs at once."""
        with self._lock:
            return {name: statistics.median(window) for name, window in self._rates.items()}

    def predict(self, generator: str, cost: float) -> float:
        return self.rate(generator) * cost


class EtaAccuracy:
    """Compares the ETA promised at submit with the time a job really took.

    Kept in memory, per process: predictions of jobs still queued or running are lost on
    restart, and figures restart from zero. Only successful jobs are scored (a failure or
    a cancellation says nothing about our estimate).
    """

    def __init__(self) -> None:
        self._promised: OrderedDict[str, float] = OrderedDict()
        self._errors: deque[float] = deque(maxlen=ACCURACY_WINDOW)
        self._lock = threading.Lock()

    def promise(self, job_id: str, eta_seconds: float) -> None:
        with self._lock:
            self._promised[job_id] = eta_seconds
            while len(self._promised) > MAX_PENDING_PREDICTIONS:
                self._promised.popitem(last=False)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._promised.pop(job_id, None)

    def observe(self, job_id: str, actual_seconds: float) -> float | None:
        """Score a finished job; returns |predicted - actual| / actual, if it was promised."""
        with self._lock:
            predicted = self._promised.pop(job_id, None)
            if predicted is None or actual_seconds <= 0:
                return None
            error = abs(predicted - actual_seconds) / actual_seconds
            self._errors.append(error)
            return error

    def summary(self) -> dict[str, float | int | None]:
        """Median and p90 relative error of the last ACCURACY_WINDOW scored jobs."""
        with self._lock:
            errors = sorted(self._errors)
        if not errors:
            return {"median": None, "p90": None, "samples": 0}
        return {
            "median": round(statistics.median(errors), 3),
            "p90": round(errors[min(len(errors) - 1, int(0.9 * len(errors)))], 3),
            "samples": len(errors),
        }
