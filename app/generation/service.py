"""GenerationService: the framework-free front door of the core.

It accepts jobs (admission.py: row first, then queue index), runs them on a pool of
worker threads (execution.py), and answers questions about jobs and itself: position
and ETA come from a forecast of the scheduling policy (outlook.py). Nothing here knows
about HTTP.

On PostgreSQL (a `listener` is given) several services, in several processes and on
several machines, share one database and so one queue (queue_postgres.py), and see each
other's job events (relay.py); each is named (`name`, default host:pid) so rows show
which one runs a job.

Life cycle, as `concurrent.futures.ThreadPoolExecutor`: construct, `start()`, use,
`shutdown(wait=True)`. Submitting before start or after shutdown raises
`ServiceStoppedError`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from . import schema
from .admission import Admission
from .errors import JobFinishedError, JobNotFoundError
from .eta import job_cost
from .events import EventBus
from .execution import Execution
from .generators import GeneratorRegistry
from .intake import Intake
from .jobs import JobStore
from .keys import ANONYMOUS
from .listener import Listener
from .models import Job, JobStatus, Priority
from .observers import ObserverSet
from .outlook import Outlook, Quote
from .processes import DEFAULT_IDLE_SECONDS
from .queue import JobQueue
from .queue_memory import MemoryQueue
from .results import ResultStore
from .retention import ResultSweeper
from .scheduling import DEFAULT_AGING_SECONDS
from .stats import service_stats
from .workers import WorkerScaler

log = logging.getLogger(__name__)

CPU_ISOLATION_MODES = ("process", "thread")


def utcnow() -> datetime:
    return datetime.now(UTC)


class GenerationService:
    def __init__(
        self,
        store: JobStore,
        results: ResultStore,
        generators: GeneratorRegistry,
        *,
        workers: int = 2,
        workers_max: int | None = None,
        queue_size: int = 100,
        max_attempts: int = 3,
        cpu_isolation: str = "thread",
        process_idle_seconds: float = DEFAULT_IDLE_SECONDS,
        job_timeout: float | None = None,
        aging_seconds: float = DEFAULT_AGING_SECONDS,
        scale_up_seconds: float = 5.0,
        idle_worker_seconds: float = 60.0,
        bus: EventBus | None = None,
        listener: Listener | None = None,
        name: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        result_ttl: timedelta | None = None,
        sweep_interval: float = 60.0,
    ) -> None:
        """`cpu_isolation="process"` runs cpu_bound generators in one child process per
        worker thread, so they cannot starve request threads of the GIL; a child idle for
        `process_idle_seconds` exits (0: never) and the next such job starts it again. With a
        `listener` (PostgreSQL) the queue and job events are shared with every other
        service on the database."""
        if cpu_isolation not in CPU_ISOLATION_MODES:
            raise ValueError(f"cpu_isolation must be one of {CPU_ISOLATION_MODES}")
        self.store = store
        self.results = results
        self.generators = generators
        self.bus = bus or EventBus()
        self.observers = ObserverSet()
        self.max_attempts = max_attempts
        self.cpu_isolation = cpu_isolation
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._clock = clock
        self._queue = self._make_queue(listener, queue_size, aging_seconds)
        self.sweeper = None
        if result_ttl:
            self.sweeper = ResultSweeper(
                store, results, result_ttl, clock, self.observers, interval=sweep_interval
            )
        self.outlook = Outlook(
            self._queue, generators, self.bus, lambda: self._execution.pool.count, self._now
        )
        self._intake = Intake(
            Admission(
                store,
                self._queue,
                self._retry_after,
                generators=generators,
                clock=clock,
                share_of=self.outlook.share,
            ),
            self._queue,
            self.outlook,
            self.bus,
            self.observers,
        )
        self._execution = Execution(
            store,
            results,
            generators,
            self._queue,
            self.outlook,
            self.bus,
            self.observers,
            WorkerScaler(workers, workers_max or workers, scale_up_seconds, idle_worker_seconds),
            clock=clock,
            cpu_isolation=cpu_isolation,
            process_idle_seconds=process_idle_seconds,
            max_attempts=max_attempts,
            job_timeout=job_timeout,
            name=self.name,
            listener=listener,
            left_queue=self._left_queue,
        )
        self._lock = threading.Lock()
        self._state = "new"

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Check the schema, recover what a dead process left behind, start the threads."""
        schema.prepare(self.store.engine)
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"cannot start a service that is {self._state}")
            self._state = "running"
        self._execution.start()
        if self.sweeper is not None:
            self.sweeper.start()

    def stop_accepting(self) -> None:
        """Refuse new jobs from now on; running jobs go on, queued ones stay queued.

        The first step of `shutdown()`, callable on its own so a drain can turn readiness
        off at once. It only takes this service's own locks, which no signal handler's
        thread holds, so it is safe to call from a signal handler.
        """
        with self._lock:
            self._state = {"new": "stopped", "running": "stopping"}.get(self._state, self._state)
        self._queue.close()

    def shutdown(self, wait: bool = True, *, timeout: float | None = None) -> None:
        """Stop taking work. Queued jobs stay queued in the database for the next start.

        With `wait`, block until running jobs finish; if `timeout` seconds pass first,
        interrupt them at their next checkpoint and put them back in the queue.
        """
        with self._lock:
            if self._state in ("new", "stopped"):
                self._state = "stopped"
                return
            self._state = "stopping"
        self._queue.close()
        if self.sweeper is not None:
            self.sweeper.stop()
        self._execution.stop(wait, timeout)
        self.store.engine.dispose()  # close pooled connections now, not at garbage collection
        with self._lock:
            self._state = "stopped"

    @property
    def accepting(self) -> bool:
        return self._state == "running"

    # -- the API ------------------------------------------------------------------

    def submit(
        self,
        generator: str,
        params: Mapping[str, Any],
        *,
        priority: Priority = Priority.NORMAL,
        owner: str = ANONYMOUS,
        idempotency_key: str | None = None,
        max_queued: int | None = None,
    ) -> Job:
        """Validate, write the row, then index it. The returned job is durable.

        With an `idempotency_key`, a repeat of the same request by the same owner returns
        the job the first one created (marked `replayed`), even after a restart; another
        request under the same key raises IdempotencyKeyReusedError. `max_queued` caps
        the queued jobs one owner may have (TooManyJobsError).
        """
        job = self._intake.submit(
            generator, params, priority, owner, idempotency_key, max_queued, self.accepting
        )
        return self.describe(job) if job.replayed else job

    def quote(
        self,
        generator: str,
        params: Mapping[str, Any],
        *,
        priority: Priority = Priority.NORMAL,
        owner: str = ANONYMOUS,
        max_queued: int | None = None,
    ) -> Quote:
        """What `submit` would answer now, without queueing anything; raises as it would."""
        return self._intake.quote(generator, params, priority, owner, max_queued, self.accepting)

    def get(self, job_id: str, *, owner: str | None = None) -> Job:
        """The job, described; JobNotFoundError if missing or owned by someone else."""
        job = self.store.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFoundError(job_id)
        return self.describe(job)

    def list(
        self,
        *,
        owner: str | None = None,
        statuses: Sequence[JobStatus] = (),
        before_pk: int | None = None,
        limit: int = 50,
    ) -> list[Job]:
        jobs = self.store.page(owner=owner, statuses=statuses, before_pk=before_pk, limit=limit)
        return [self.describe(job) for job in jobs]

    def cancel(self, job_id: str, *, owner: str | None = None) -> Job:
        """Cancel a queued job at once, or ask a running one to stop at its next checkpoint
        (on another process, its heartbeat passes the request on)."""
        job = self.get(job_id, owner=owner)
        if job.status is JobStatus.QUEUED:
            cancelled = self.store.cancel_queued(job_id, self._clock())
            if cancelled is not None:
                self._left_queue(job_id)
                self.outlook.accuracy.forget(job_id)
                self.bus.publish(job_id, "cancelled")
                return self.describe(cancelled)
            job = self.get(job_id)  # it started meanwhile
        if job.status is JobStatus.RUNNING:
            flagged = self.store.request_cancel(job_id)
            self._execution.cancel(job_id)
            if flagged is not None:
                return self.describe(flagged)
            job = self.get(job_id)  # it finished meanwhile
        raise JobFinishedError(job_id, job.status.value)

    def describe(self, job: Job) -> Job:
        """The job with its current queue position and ETA (seconds to finish) filled in."""
        return self.outlook.describe(job)

    def stats(self) -> dict[str, Any]:
        scaler = self._execution.pool.scaler
        stats = service_stats(
            self.store,
            running=self.accepting,
            process=self.name,
            shared=self._queue.shared,
            workers=self.worker_count,
            workers_range=(scaler.minimum, scaler.maximum),
            active_workers=self.active_workers,
            queue_capacity=self._queue.capacity,
            queued_by_priority=self.queued_by_priority(),
            result_ttl=self.sweeper.ttl if self.sweeper else None,
            aging_seconds=self._queue.aging_seconds,
            eta_accuracy=self.outlook.summary(),
        )
        stats["abandoned_runs"] = self._execution.runner.abandoned_runs
        return stats

    def queued_by_priority(self) -> dict[Priority, int]:
        """Jobs waiting in the queue (the whole cluster's, on PostgreSQL), by priority."""
        return self._queue.depth_by_priority()

    @property
    def queue_capacity(self) -> int:
        return self._queue.capacity

    @property
    def active_workers(self) -> int:
        return self._execution.active

    @property
    def worker_count(self) -> int:
        return self._execution.pool.count

    def tick(self) -> None:
        """Resize the worker pool and push changed positions; the scheduler thread's step
        (one at a time: this waits for a step the scheduler thread is running)."""
        self._execution.tick()

    def heartbeat(self) -> None:
        """Beat once now (the heartbeat thread beats every third of a lease)."""
        self._execution.leases.beat()

    # -- internals ----------------------------------------------------------------

    def _make_queue(
        self, listener: Listener | None, capacity: int, aging_seconds: float
    ) -> JobQueue:
        def cost(generator: str, params: dict[str, Any]) -> float:
            return job_cost(self.generators.get(generator), params)

        options: dict[str, Any] = {
            "aging_seconds": aging_seconds,
            "clock": self._now,
            "on_change": self._poke,
            "cost": cost,
        }
        if listener is None:
            return MemoryQueue(capacity, store=self.store, **options)
        # Only here: the module builds its claim statement with SQLAlchemy's PostgreSQL
        # dialect at import, memory that a service on SQLite would hold for nothing.
        from .queue_postgres import PostgresQueue

        return PostgresQueue(self.store, capacity, listener, **options)

    def _left_queue(self, job_id: str) -> None:
        """The job is no longer queued (cancelled, or started elsewhere): stop
        forecasting it; call before saying so on the bus."""
        self._queue.remove(job_id)
        self.outlook.withdraw(job_id)

    def _retry_after(self) -> int:
        return self.outlook.retry_after()

    def _poke(self) -> None:
        self._execution.poke()

    def _now(self) -> float:
        return self._clock().timestamp()
