"""The worker half of the service: threads that claim and run jobs, their leases, and the
scheduler thread that resizes the pool, refreshes forecasts and pushes positions.

Start order: recover what a dead process left, start the helpers that live as long as
the service (PostgreSQL's listener and event relay), the heartbeat, the workers, the
scheduler. Stop order is the reverse, after the workers have finished or been
interrupted at the drain's deadline (their jobs go back to the queue).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from ..events.bus import EventBus
from ..events.observers import JobObserver
from ..forecast.outlook import Outlook
from ..generators import GeneratorRegistry
from ..job import Job, JobStatus
from ..queue.contract import JobQueue
from ..queue.pause import QueuePause
from ..results.storage import ResultStore
from ..settings import ServiceSettings
from ..store.engine import checkpoint
from ..store.jobs import JobStore
from ..store.listener import Listener
from .deadline import runner_thread_scope
from .leases import LeaseKeeper
from .processes import WorkerProcess
from .relay import EventRelay
from .run_context import CancelToken
from .runner import JobRunner
from .ticker import Ticker
from .timeouts import SHUTDOWN_GRACE_SECONDS
from .workers import WorkerPool, WorkerScaler

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
ANNOUNCE_INTERVAL = 0.25


class Background(Protocol):
    """A helper that lives as long as the service (e.g. the PostgreSQL listener)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Execution:
    def __init__(
        self,
        store: JobStore,
        results: ResultStore,
        generators: GeneratorRegistry,
        queue: JobQueue,
        outlook: Outlook,
        bus: EventBus,
        observer: JobObserver,
        settings: ServiceSettings,
        *,
        clock: Callable[[], datetime],
        name: str,
        listener: Listener | None = None,
        left_queue: Callable[[str], None] = lambda job_id: None,
        pause: QueuePause | None = None,
    ) -> None:
        """With a `listener` (PostgreSQL), job events are relayed to and from the other
        processes; `left_queue(job_id)` hears of jobs another process started; while
        `pause` holds, workers claim nothing."""
        self._queue = queue
        self._engine = store.engine
        self._outlook = outlook
        self._generators = generators
        self._clock = clock
        self._cpu_isolation = settings.cpu_isolation
        self._process_idle = settings.process_idle_seconds
        self._max_attempts = max_attempts = settings.max_attempts
        self.runner = JobRunner(
            store,
            results,
            generators,
            bus,
            clock,
            observer,
            timeout=settings.job_timeout,
            max_attempts=max_attempts,
        )
        self.leases = LeaseKeeper(
            store, queue, bus, results, max_attempts=max_attempts, clock=clock, entry=outlook.entry
        )
        self._background: list[Background] = []
        if listener is not None:
            relay = EventRelay(store.engine, store, bus, listener, left_queue=left_queue)
            self._background = [listener, relay]
        self.pool = WorkerPool(
            queue,
            self._process,
            WorkerScaler(
                *settings.worker_range, settings.scale_up_seconds, settings.idle_worker_seconds
            ),
            self._now,
            helper=self._helper,
            prefix=f"{name}/",
            around=lambda: _worker_thread(store),
            pause=pause,
        )
        # One step at a time, whichever thread runs it (the scheduler, or a caller of
        # `GenerationService.tick`): two at once could both add a worker for one backlog,
        # and a second checkpoint would return at once (PASSIVE does not wait for the
        # first), before the WAL it was asked to copy is in the database file.
        self._step_lock = threading.Lock()
        self._scheduler = Ticker(
            self.tick, "gen-scheduler", every=TICK_SECONDS, min_interval=ANNOUNCE_INTERVAL
        )

    def start(self) -> None:
        for helper in self._background:
            helper.start()
        self.leases.announce(self._queue.recover(self._max_attempts))
        self.leases.start()
        self.pool.start()
        self._scheduler.start()

    def poke(self) -> None:
        """The queue changed: run the scheduler's step soon."""
        self._scheduler.poke()

    def tick(self) -> None:
        """Re-read a shared queue, resize the pool, push changed positions, checkpoint
        SQLite's WAL (here rather than in a claim's or a submit's commit: store/engine.py).
        Waits for a step another thread is running, then runs its own."""
        with self._step_lock:
            self._queue.refresh()
            self.pool.rebalance()
            self._outlook.announce()
            try:
                checkpoint(self._engine)
            except SQLAlchemyError as error:  # the next tick tries again
                log.warning("could not checkpoint the database: %s", error)

    def stop(self, wait: bool, timeout: float | None) -> None:
        """After the queue closed: let running jobs finish (or interrupt them once
        `timeout` passes), then stop the helper threads."""
        self._scheduler.stop(timeout=0 if not wait else SHUTDOWN_GRACE_SECONDS)
        if wait:
            self._join(timeout)
        self.leases.stop()
        for helper in reversed(self._background):
            helper.stop()

    def cancel(self, job_id: str) -> None:
        """Tell a run of this process to stop at its next checkpoint (runs elsewhere hear
        of it through their heartbeat)."""
        token = self.leases.token(job_id)
        if token is not None:
            token.cancel("cancelled")

    @property
    def active(self) -> int:
        return len(self.leases)

    def _helper(self, worker: str) -> WorkerProcess | None:
        """The child process a worker thread runs CPU-bound generators in, if isolated.
        Started by its first CPU-bound job, so always after gunicorn's fork, and stopped
        after `process_idle_seconds` without one."""
        if self._cpu_isolation == "process" and self._generators.has_cpu_bound:
            name = worker.replace("worker", "process")
            return WorkerProcess(name, idle_seconds=self._process_idle)
        return None

    def _process(self, job: Job, process: WorkerProcess | None) -> None:
        taken = self._now()
        self._outlook.withdraw(job.id)  # no `queued` event may follow its `started`
        token = CancelToken()
        self.leases.add(job, token)
        self._outlook.started(job, taken)
        final = None
        try:
            final = self.runner.run(job, token, process)
        finally:
            self.leases.remove(job.id)
            self._outlook.finished(job, final)
        if final is not None and final.status is JobStatus.QUEUED:
            # Given back (a database error, or the drain's deadline): claimable again, by
            # this process or, on a shared queue, by any other.
            self._queue.returned([self._outlook.entry(final)])

    def _join(self, timeout: float | None) -> None:
        if not self.pool.join(timeout):
            tokens = self.leases.tokens()
            log.warning("drain deadline passed; requeueing %d running jobs", len(tokens))
            for token in tokens:
                token.cancel("shutdown")
            self.pool.join(SHUTDOWN_GRACE_SECONDS)

    def _now(self) -> float:
        return self._clock().timestamp()


@contextmanager
def _worker_thread(store: JobStore) -> Iterator[None]:
    """What a worker thread runs inside: writes on one connection of its own, and the
    runner thread of its jobs' deadlines, which ends (joined) before the worker does."""
    with store.pinned(), runner_thread_scope():
        yield
