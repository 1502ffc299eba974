"""Positions and ETAs: the scheduling policy played forward on a copy of the queue.

A queued job's **position** is the number of jobs now queued that are predicted to start
before it; its **ETA** is when it is predicted to finish. Both come from one simulation:
each worker becomes free when its running job is predicted to end (now, if idle); the
earliest free worker takes the job the policy picks *at that moment* (so aging happens in
the simulation as it will in reality) and is busy for that job's predicted run time. The
simulation also expects the future to look like the recent past: the submissions of the
last ARRIVAL_WINDOW_SECONDS are replayed as *expected arrivals*, so a LOW job's ETA allows
for the HIGH jobs that will overtake it (they delay it, but are not counted in its
position, which counts only jobs queued now). Cancellations are not foreseen; they and
every real arrival change the forecast, and the service pushes the new position and ETA
to whoever is watching.

Cost: O(n log n) for n queued jobs (8-50 us per job on the reference machine, by load),
shared by every reader: `Forecaster` caches it per queue version. When one forecast costs
more than CHEAP_SECONDS (a deep queue), readers that do not ask for an exact one may get
one up to MAX_AGE_SECONDS old rather than each paying for a new one after every change;
the scheduler thread keeps it fresh and pushes exact changes.
"""

from __future__ import annotations

import dataclasses
import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .eta import RunTimeEstimator
from .queue import JobQueue
from .scheduling import QueueEntry, SchedulingIndex

# A forecast older than this is recomputed even if the queue did not change, because
# running jobs that overrun their prediction push every start time back.
MAX_AGE_SECONDS = 1.0
CHEAP_SECONDS = 0.01
# Recent submissions replayed as expected arrivals: those of this window, once it spans
# enough time to say something about a rate.
ARRIVAL_WINDOW_SECONDS = 60.0
ARRIVAL_MIN_SPAN_SECONDS = 10.0
ARRIVAL_MEMORY = 1000
# Orders of expected arrivals: behind every real job, and behind a quoted one.
EXPECTED_ORDER = 2**62 + 1
EXPECTED_PREFIX = "~expected"


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a queued job stands: its position, predicted start and finish (epoch s)."""

    position: int
    start: float
    finish: float


@dataclass(frozen=True)
class Forecast:
    made_at: float
    version: int
    slots: dict[str, Slot] = field(default_factory=dict)

    @property
    def next_start(self) -> float | None:
        """When the next queued job is predicted to start, freeing a queue slot."""
        return min((slot.start for slot in self.slots.values()), default=None)


def simulate(
    index: SchedulingIndex,
    now: float,
    busy_until: Iterable[float],
    workers: int,
    run_seconds: Callable[[QueueEntry], float],
    *,
    until: str | None = None,
    expected: Iterable[QueueEntry] = (),
    capacity: int | None = None,
) -> dict[str, Slot]:
    """Pop `index` (a copy: it is consumed) in policy order at predicted start times.

    `busy_until` holds the predicted end of each running job; `workers` is how many
    threads take jobs. `expected` arrivals (by `enqueued_at`) join the queue when their
    time comes, if it has room. Stops once every queued job, or job `until`, has a slot.
    """
    workers = max(1, workers)  # a pool that is draining or not started: as if one worker
    ends = sorted(max(now, end) for end in busy_until)
    free = (ends + [now] * workers)[:workers]
    heapq.heapify(free)
    arrivals = iter(expected)
    arrival = next(arrivals, None)
    remaining = len(index)
    slots: dict[str, Slot] = {}
    while remaining:
        start = heapq.heappop(free)
        while arrival is not None and arrival.enqueued_at <= start:
            if capacity is None or len(index) < capacity:
                index.add(arrival, arrival.enqueued_at)
            arrival = next(arrivals, None)
        entry = index.pop(start)
        finish = start + run_seconds(entry)
        heapq.heappush(free, finish)
        if entry.job_id.startswith(EXPECTED_PREFIX):
            continue
        remaining -= 1
        slots[entry.job_id] = Slot(len(slots), start, finish)
        if entry.job_id == until:
            break
    return slots


class ArrivalHistory:
    """Recent submissions, replayed forward as the arrivals a forecast should expect."""

    def __init__(self) -> None:
        self._recent: deque[QueueEntry] = deque(maxlen=ARRIVAL_MEMORY)
        self._lock = threading.Lock()

    def record(self, entry: QueueEntry) -> None:
        with self._lock:
            self._recent.append(entry)

    def expected(self, now: float) -> Iterator[QueueEntry]:
        """The last window's arrivals shifted forward by its span, again and again."""
        with self._lock:
            while self._recent and self._recent[0].enqueued_at < now - ARRIVAL_WINDOW_SECONDS:
                self._recent.popleft()
            recent = list(self._recent)
        if not recent or now - recent[0].enqueued_at < ARRIVAL_MIN_SPAN_SECONDS:
            return iter(())
        return _replay(recent, now - recent[0].enqueued_at)


def _replay(recent: list[QueueEntry], span: float) -> Iterator[QueueEntry]:
    order = EXPECTED_ORDER
    cycle = 1
    while True:
        for entry in recent:
            yield dataclasses.replace(
                entry,
                job_id=f"{EXPECTED_PREFIX}-{order}",
                order=order,
                enqueued_at=entry.enqueued_at + cycle * span,
            )
            order += 1
        cycle += 1


class Forecaster:
    """Caches the forecast of a queue; recomputes it when the queue changed or it aged."""

    def __init__(
        self,
        queue: JobQueue,
        estimator: RunTimeEstimator,
        capacity: Callable[[], tuple[list[float], int]],
        clock: Callable[[], float],
    ) -> None:
        self._queue = queue
        self._estimator = estimator
        self._capacity = capacity  # -> (predicted ends of running jobs, worker count)
        self._clock = clock
        self.arrivals = ArrivalHistory()
        self._lock = threading.Lock()
        self._latest = Forecast(made_at=float("-inf"), version=-1)
        self._cost = 0.0  # seconds the latest forecast took to compute

    def current(self, *, exact: bool = False) -> Forecast:
        """The forecast of the queue as it is (`exact`), or as it was a moment ago when
        recomputing is expensive."""
        with self._lock:
            now = self._clock()
            latest = self._latest
            if now - latest.made_at < MAX_AGE_SECONDS and (
                latest.version == self._queue.version or (not exact and self._cost > CHEAP_SECONDS)
            ):
                return latest
            started = time.perf_counter()
            version, index = self._queue.snapshot()
            slots = self._simulate(index, now)
            self._latest = Forecast(now, version, slots)
            self._cost = time.perf_counter() - started
            return self._latest

    def quote(self, entry: QueueEntry) -> Slot:
        """The slot `entry`, not in the queue, would get if it were added now."""
        now = self._clock()
        _, index = self._queue.snapshot()
        index.add(entry, now)
        return self._simulate(index, now, until=entry.job_id)[entry.job_id]

    def _simulate(
        self, index: SchedulingIndex, now: float, until: str | None = None
    ) -> dict[str, Slot]:
        busy_until, workers = self._capacity()
        return simulate(
            index,
            now,
            busy_until,
            workers,
            self._pricer(),
            until=until,
            expected=self.arrivals.expected(now),
            capacity=self._queue.capacity,
        )

    def _pricer(self) -> Callable[[QueueEntry], float]:
        rates = self._estimator.rates()
        return lambda entry: rates.get(entry.generator, 1.0) * entry.cost
