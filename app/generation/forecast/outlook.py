"""What the service predicts: positions, ETAs, quotes, Retry-After, and how right it was.

`Outlook` ties together the run-time estimator (forecast/run_times.py), the cached forecast of the
queue (forecaster.py), the pushes of changed positions (announce.py) and the scoring of
past ETAs. The service tells it when jobs start and finish; a worker never waits for a
forecast (at most for an announcement in progress to finish publishing).

ETAs are seconds until the job is predicted to *finish* (queue wait plus its own run).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from typing import Any

from ..events.bus import EventBus
from ..job import Job, JobStatus, Priority
from ..queue.contract import JobQueue, entry_of
from ..scheduling.policy import QueueEntry
from .announce import PositionAnnouncer
from .forecaster import Forecaster
from .run_times import EtaAccuracy, JobCosts, RunTimeEstimator

MAX_RETRY_AFTER = 300
# A quoted (hypothetical) job: an id no job has, and an order behind every real one.
QUOTE_ID = "<quote>"
QUOTE_ORDER = 2**62


@dataclasses.dataclass(frozen=True)
class Quote:
    """What a submission would get now: its position and ETA (seconds until finished)."""

    generator: str
    params: dict[str, Any]
    priority: Priority
    position: int
    eta_seconds: float


class Outlook:
    def __init__(
        self,
        queue: JobQueue,
        cost: JobCosts,
        bus: EventBus,
        workers: Callable[[], int],
        clock: Callable[[], float],
    ) -> None:
        self._queue = queue
        self.estimator = RunTimeEstimator()
        self.accuracy = EtaAccuracy()
        self.cost = cost  # a job's cost in its generator's unit (what the estimator scales)
        self._workers = workers
        self._clock = clock
        self._forecaster = Forecaster(queue, self.estimator, self._capacity, clock)
        self._announcer = PositionAnnouncer(bus, queue.__contains__)
        # Of each job running here: when its worker took it and its cost, and its
        # predicted finish.
        self._taken: dict[str, tuple[float, float]] = {}
        self._ends_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def entry(self, job: Job) -> QueueEntry:
        """The job as the scheduler sees it, priced in its generator's cost unit: built
        once, at admission, for both the forecast and the queue."""
        return entry_of(job, self.cost)

    def share(self, generator: str, params: dict[str, Any]) -> float:
        """A job's predicted seconds on one worker: how far its owner's next job of the
        same priority is keyed after it (scheduling/policy.py, fair share)."""
        return self.estimator.predict(generator, self.cost(generator, params))

    def describe(self, job: Job) -> Job:
        """The job with its position (if queued here) and ETA filled in."""
        now = self._clock()
        if job.status is JobStatus.QUEUED:
            slot = self._forecaster.slot(job.id)
            if slot is None:  # indexed by another process, or not yet
                return job
            return dataclasses.replace(
                job, position=slot.position, eta_seconds=_seconds(slot.finish - now)
            )
        if job.status is JobStatus.RUNNING:
            with self._lock:
                ends_at = self._ends_at.get(job.id)
            if ends_at is None:  # running in another process: scale by its progress
                predicted = self.estimator.predict(
                    job.generator, self.cost(job.generator, job.params)
                )
                ends_at = now + predicted * (1 - job.progress.percent / 100)
            return dataclasses.replace(job, eta_seconds=_seconds(ends_at - now))
        return job

    def admit(self, job: Job, entry: QueueEntry) -> Job:
        """A just-written job (`entry` is how it will be indexed, not yet done), with the
        position and ETA it will get.

        The ETA is remembered, to be scored when the job succeeds, and counts as already
        announced (the caller publishes it with the job's `queued` event).
        """
        now = self._clock()
        slot = self._forecaster.admit(entry)
        self._forecaster.arrivals.record(entry)
        self.accuracy.promise(job.id, slot.finish - now)
        self._announcer.sent(job.id, slot)
        return dataclasses.replace(
            job, position=slot.position, eta_seconds=_seconds(slot.finish - now)
        )

    def quote(
        self, generator: str, params: dict[str, Any], priority: Priority, owner: str
    ) -> Quote:
        """The position and ETA a job with these (valid) fields would get if submitted now."""
        now = self._clock()
        cost = self.cost(generator, params)
        key = self._queue.key_for(owner, priority, now, self.share(generator, params))
        entry = QueueEntry(QUOTE_ID, priority, QUOTE_ORDER, owner, now, generator, cost, key)
        slot = self._forecaster.quote(entry)
        return Quote(generator, params, priority, slot.position, _seconds(slot.finish - now))

    def retry_after(self) -> int:
        """Whole seconds until a queue slot is predicted to free up (the next start)."""
        next_start = self._forecaster.next_start()
        wait = 1.0 if next_start is None else next_start - self._clock()
        return max(1, min(MAX_RETRY_AFTER, math.ceil(wait)))

    def started(self, job: Job, taken_at: float) -> None:
        """A worker took the job off the queue at `taken_at` and has claimed it."""
        cost = self.cost(job.generator, job.params)
        ends_at = taken_at + self.estimator.predict(job.generator, cost)
        with self._lock:
            self._ends_at[job.id] = ends_at
            self._taken[job.id] = (taken_at, cost)

    def finished(self, job: Job, final: Job | None) -> None:
        """Learn from a run's outcome: its run time, and the error of the promised ETA."""
        with self._lock:
            self._ends_at.pop(job.id, None)
            taken = self._taken.pop(job.id, None)
        if final is None or final.status is JobStatus.QUEUED:  # lost its claim, or requeued
            return
        if final.status is not JobStatus.SUCCEEDED or not final.started_at:
            self.accuracy.forget(final.id)
            return
        if taken is not None:  # the worker's whole time on it: claim, run, result, finish
            taken_at, cost = taken
            self.estimator.record(job.generator, cost, self._clock() - taken_at)
        finished = final.finished_at or final.started_at
        self.accuracy.observe(final.id, (finished - final.created_at).total_seconds())

    def withdraw(self, job_id: str) -> None:
        """The job left the queue (taken or cancelled); call before saying so on the bus."""
        self._announcer.withdraw(job_id)

    def announce(self) -> int:
        """Push positions and ETAs that changed to their watchers."""
        return self._announcer.announce(lambda: self._forecaster.current(exact=True), self._clock())

    def summary(self) -> dict[str, Any]:
        return self.accuracy.summary()

    def _capacity(self) -> tuple[list[float], int]:
        with self._lock:
            ends = list(self._ends_at.values())
        return ends, self._workers()


def _seconds(delta: float) -> float:
    return round(max(0.0, delta), 1)
