"""Positions and ETAs: the scheduling policy played forward on a copy of the queue.

A queued job's **position** is the number of jobs now queued that are predicted to start
before it; its **ETA** is when it is predicted to finish. Both come from one simulation:
each worker becomes free when its running job is predicted to end (now, if idle); the
earliest free worker takes the queued job with the smallest key *at that moment* (jobs
that arrive meanwhile compete from their arrival) and is busy for that job's predicted
run time. The
simulation also expects the future to look like the recent past: the submissions of the
last ARRIVAL_WINDOW_SECONDS are replayed as *expected arrivals*, so a LOW job's ETA allows
for the HIGH jobs that will overtake it (they delay it, but are not counted in its
position, which counts only jobs queued now). Cancellations are not foreseen; they and
every real arrival change the forecast, and the service pushes the new position and ETA
to whoever is watching.

Cost: a full simulation is O(n log n) for n queued jobs (8-50 us per job on the
reference machine, by load). `Forecaster` keeps one alive (forecast/plan.py) and follows the queue
change by change through its journal: a submit that joins the end of the plan, and a
worker taking the first pick, cost O(log n); other changes (a job that overtakes others,
a cancellation) make the next reader replay it. Run times, running jobs and the worker
count also move a forecast: when replaying is cheap (under CHEAP_SECONDS) any change of
theirs replays it; otherwise the plan stands for up to MAX_AGE_SECONDS, refreshed by
whichever reader comes first after that (longer when a replay is dear: REPLAY_SHARE).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..queue.contract import JobQueue
from ..scheduling.policy import QueueEntry, SchedulingIndex
from .plan import EXPECTED_PREFIX, Plan, Slot
from .run_times import RunTimeEstimator

__all__ = ["ArrivalHistory", "Forecast", "Forecaster", "Slot", "simulate"]

# A forecast older than this is recomputed even if the queue did not change, because
# running jobs that overrun their prediction push every start time back.
MAX_AGE_SECONDS = 1.0
CHEAP_SECONDS = 0.002
# ...unless replaying costs more than this share of the time between replays: a deep
# queue's replay (tens of ms per thousand jobs, with the GIL held) then waits longer, so
# forecasting never takes more than about this share of a core from the web tier.
REPLAY_SHARE = 0.05
# Recent submissions replayed as expected arrivals: those of this window, once it spans
# enough time to say something about a rate.
ARRIVAL_WINDOW_SECONDS = 60.0
ARRIVAL_MIN_SPAN_SECONDS = 10.0
ARRIVAL_MEMORY = 1000
# Orders of expected arrivals: behind every real job, and behind a quoted one.
EXPECTED_ORDER = 2**62 + 1


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
    plan = Plan(index, now, busy_until, workers, run_seconds, expected=expected, capacity=capacity)
    return plan.slots() if until is None else _through(plan.slots(), until)


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
                key=entry.key + cycle * span,
            )
            order += 1
        cycle += 1


class Forecaster:
    """Keeps a plan of the queue in step with it; replays the plan when it cannot follow."""

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
        self._plan: Plan | None = None
        self._inputs: tuple[object, ...] = ()  # what the plan was made from, besides the queue
        self._cost = 0.0  # seconds the latest replay took
        self._revision = 0  # bumped whenever the plan changes
        self._view = Forecast(made_at=float("-inf"), version=-1)
        self._view_revision = -1
        self.replays = 0  # full simulations so far (for tests and benchmarks)

    def current(self, *, exact: bool = False) -> Forecast:
        """Every queued job's slot: of the queue as it is (`exact`), or as it was a moment
        ago when the queue is deep (listing every slot is then worth sharing)."""
        with self._lock:
            now = self._clock()
            view = self._view
            if not exact and self._cost > CHEAP_SECONDS and now - view.made_at < self._max_age():
                return view
            plan = self._plan_at(now, exact)
            if self._view_revision != self._revision:
                self._view = Forecast(now, plan.version, plan.slots())
                self._view_revision = self._revision
            return self._view

    def slot(self, job_id: str) -> Slot | None:
        """The queued job's slot; None if it is not queued here."""
        with self._lock:
            return self._plan_at(self._clock(), exact=False).slot(job_id)

    def next_start(self) -> float | None:
        """When the next queued job is predicted to start, freeing a queue slot."""
        with self._lock:
            return self._plan_at(self._clock(), exact=False).next_start

    def quote(self, entry: QueueEntry) -> Slot:
        """The slot `entry`, not in the queue, would get if it were added now."""
        with self._lock:
            now = self._clock()
            return self._plan_at(now, exact=False).quote(entry, now)

    def admit(self, entry: QueueEntry) -> Slot:
        """The slot of a job about to be indexed (written, not yet put). The plan takes it
        in now, so the queue's `put` of it is no news later, and a job that joins the end
        of the plan is simulated once, not once for its quote and again for its put."""
        with self._lock:
            now = self._clock()
            plan = self._plan_at(now, exact=False)
            plan.add(entry, now)
            self._revision += 1
            slot = None if plan.broken else plan.slot(entry.job_id)
            return slot if slot is not None else plan.quote(entry, now)

    def _plan_at(self, now: float, exact: bool) -> Plan:
        """The plan, brought up to date with the queue, or replayed when it cannot be."""
        plan = self._plan
        if plan is not None:
            self._follow(plan, now)
            if plan.broken or now - plan.made_at >= self._max_age():
                plan = None
            elif (exact or self._cost <= CHEAP_SECONDS) and self._inputs != self._read_inputs():
                plan = None
        return plan if plan is not None else self._replay(now)

    def _max_age(self) -> float:
        return max(MAX_AGE_SECONDS, self._cost / REPLAY_SHARE)

    def _follow(self, plan: Plan, now: float) -> None:
        changes = self._queue.changes_since(plan.version)
        if changes is None:
            plan.broken = True
            return
        for version, kind, entry in changes:
            if kind == "put":
                plan.add(entry, now)
            elif kind == "get":
                plan.take(entry.job_id)
            else:
                plan.broken = True
            plan.version = version
            self._revision += 1
            if plan.broken:
                return

    def _read_inputs(self) -> tuple[object, ...]:
        busy_until, workers = self._capacity()
        return tuple(sorted(busy_until)), workers, self._estimator.version

    def _replay(self, now: float) -> Plan:
        started = time.perf_counter()
        version, index = self._queue.snapshot()
        self._inputs = self._read_inputs()
        busy_until, workers, _ = self._inputs
        self._plan = Plan(
            index,
            now,
            busy_until,  # type: ignore[arg-type]
            workers,  # type: ignore[arg-type]
            self._pricer(),
            expected=self.arrivals.expected(now),
            capacity=self._queue.capacity,
            version=version,
        )
        self._cost = time.perf_counter() - started
        self._revision += 1
        self.replays += 1
        return self._plan

    def _pricer(self) -> Callable[[QueueEntry], float]:
        rates = self._estimator.rates()
        return lambda entry: rates.get(entry.generator, 1.0) * entry.cost


def _through(slots: dict[str, Slot], until: str) -> dict[str, Slot]:
    """The slots up to and including job `until`'s."""
    through: dict[str, Slot] = {}
    for job_id, slot in slots.items():
        through[job_id] = slot
        if job_id == until:
            break
    return through
