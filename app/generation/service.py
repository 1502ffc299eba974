"""GenerationService: the framework-free front door of the core.

It accepts jobs (row first, through the queue backend: queue.py), owns the worker
threads that claim and run them and the heartbeat that keeps their leases (leases.py),
and answers questions about jobs and itself. Nothing here knows about HTTP.

On PostgreSQL several services (processes, machines) share one database and so one
queue; each is named (`name`, default host:pid) so rows show which one runs a job.

Life cycle, as `concurrent.futures.ThreadPoolExecutor`: construct, `start()`, use,
`shutdown(wait=True)`. Submitting before start or after shutdown raises
`ServiceStoppedError`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from . import schema
from .admission import Admission, fingerprint
from .errors import (
    IdempotencyKeyReusedError,
    InvalidParamsError,
    JobFinishedError,
    JobNotFoundError,
    QueueFullError,
    ServiceStoppedError,
    TooManyJobsError,
)
from .eta import RunTimeEstimator, queued_eta, running_eta
from .events import EventBus
from .generators import GeneratorRegistry
from .jobs import JobStore
from .keys import ANONYMOUS
from .leases import LeaseKeeper
from .models import Job, JobStatus, Priority
from .observers import ObserverSet
from .processes import WorkerProcess
from .queue import JobQueue, MemoryQueue, utcnow
from .results import ResultStore
from .retention import ResultSweeper
from .runner import CancelToken, JobRunner
from .stats import service_stats

log = logging.getLogger(__name__)

CPU_ISOLATION_MODES = ("process", "thread")
CLAIM_RETRY_SECONDS = 1.0
SHUTDOWN_GRACE_SECONDS = 5.0


# What `observers.rejected` is told when a submission is refused.
REJECTION_REASONS: dict[type[Exception], str] = {
    QueueFullError: "queue_full",
    ServiceStoppedError: "unavailable",
    InvalidParamsError: "invalid_params",
    TooManyJobsError: "too_many_jobs",
    IdempotencyKeyReusedError: "idempotency_key_reused",
}
_REFUSALS = tuple(REJECTION_REASONS)


class Background(Protocol):
    """A helper that lives as long as the service: started before the workers, stopped
    after them (e.g. the PostgreSQL listener and event relay)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class GenerationService:
    def __init__(
        self,
        store: JobStore,
        results: ResultStore,
        generators: GeneratorRegistry,
        *,
        workers: int = 2,
        queue_size: int = 100,
        max_attempts: int = 3,
        cpu_isolation: str = "thread",
        job_timeout: float | None = None,
        queue: JobQueue | None = None,
        bus: EventBus | None = None,
        background: Sequence[Background] = (),
        name: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        result_ttl: timedelta | None = None,
        sweep_interval: float = 60.0,
    ) -> None:
        """`cpu_isolation="process"` runs cpu_bound generators in one child process per
        worker thread, so they cannot starve request threads of the GIL."""
        if cpu_isolation not in CPU_ISOLATION_MODES:
            raise ValueError(f"cpu_isolation must be one of {CPU_ISOLATION_MODES}")
        self.store = store
        self.results = results
        self.generators = generators
        self.bus = bus or EventBus()
        self.observers = ObserverSet()
        self.worker_count = workers
        self.max_attempts = max_attempts
        self.cpu_isolation = cpu_isolation
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._clock = clock
        self._queue = queue if queue is not None else MemoryQueue(store, queue_size, clock=clock)
        self._background = list(background)
        self._admission = Admission(store, self._queue, self._retry_after)
        self._estimator = RunTimeEstimator()
        self._runner = JobRunner(
            store,
            results,
            generators,
            self.bus,
            self._estimator,
            clock,
            self.observers,
            timeout=job_timeout,
            max_attempts=max_attempts,
        )
        self._leases = LeaseKeeper(self._queue, self.bus, max_attempts=max_attempts, clock=clock)
        self.sweeper = None
        if result_ttl:
            self.sweeper = ResultSweeper(
                store, results, result_ttl, clock, self.observers, interval=sweep_interval
            )
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._state = "new"

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Recover what a dead process left behind, then start the helpers and workers."""
        schema.prepare(self.store.engine)
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"cannot start a service that is {self._state}")
            self._state = "running"
        self._leases.announce(self._queue.recover(self.max_attempts))
        for helper in self._background:
            helper.start()
        self._leases.start()
        isolate = self.cpu_isolation == "process" and self.generators.has_cpu_bound
        for number in range(1, self.worker_count + 1):
            # Started here, after gunicorn's fork; each belongs to one worker thread.
            process = WorkerProcess.spawn(f"gen-process-{number}") if isolate else None
            thread = threading.Thread(
                target=self._work, args=(process,), name=f"gen-worker-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
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
        self._closing.set()
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
        self._closing.set()
        self._queue.close()
        if self.sweeper is not None:
            self.sweeper.stop()
        if wait:
            self._join(timeout)
        self._leases.stop()
        for helper in reversed(self._background):
            helper.stop()
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
        """Validate, then write the row and queue it. The returned job is durable.

        With an `idempotency_key`, a repeat of the same request by the same owner returns
        the job the first one created (marked `replayed`), even after a restart; another
        request under the same key raises IdempotencyKeyReusedError. `max_queued` caps
        the queued jobs one owner may have (TooManyJobsError).
        """
        try:
            job = self._accept(generator, params, priority, owner, idempotency_key, max_queued)
        except _REFUSALS as refused:
            self.observers.rejected(REJECTION_REASONS[type(refused)])
            raise
        if job.replayed:
            return self.describe(job)
        self.observers.submitted(job)
        position = job.position or 0
        return dataclasses.replace(job, eta_seconds=self._queued_eta(job, position))

    def _announce(self, job: Job, position: int) -> None:
        # The queue calls this before any worker can claim the job, so `queued` comes
        # before `started` on the bus.
        eta = self._queued_eta(job, position)
        self.bus.publish(job.id, "queued", position=position, eta_seconds=eta)

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
        """Cancel a queued job at once, or ask a running one to stop at its next checkpoint."""
        job = self.get(job_id, owner=owner)
        if job.status is JobStatus.QUEUED:
            cancelled = self._queue.cancel(job_id)
            if cancelled is not None:
                self.bus.publish(job_id, "cancelled")
                return self.describe(cancelled)
            job = self.get(job_id)  # it started meanwhile
        if job.status is JobStatus.RUNNING:
            flagged = self.store.request_cancel(job_id)
            token = self._leases.token(job_id)  # on another process, its heartbeat tells it
            if token is not None:
                token.cancel("cancelled")
            if flagged is not None:
                return self.describe(flagged)
            job = self.get(job_id)  # it finished meanwhile
        raise JobFinishedError(job_id, job.status.value)

    def describe(self, job: Job) -> Job:
        """The job with its current queue position and ETA filled in."""
        if job.status is JobStatus.QUEUED:
            position = self._queue.position(job)
            if position is None:  # claimed meanwhile
                return job
            eta = self._queued_eta(job, position)
            return dataclasses.replace(job, position=position, eta_seconds=eta)
        if job.status is JobStatus.RUNNING:
            eta = running_eta(job.progress.percent, self._run_seconds(job))
            return dataclasses.replace(job, eta_seconds=round(eta, 1))
        return job

    def stats(self) -> dict[str, Any]:
        stats = service_stats(
            self.store,
            running=self.accepting,
            process=self.name,
            workers=self.worker_count,
            running_here=self.active_workers,
            queue_size=len(self._queue),
            queue_capacity=self._queue.capacity,
            queued_by_priority=self.queued_by_priority(),
            result_ttl=self.sweeper.ttl if self.sweeper else None,
        )
        stats["abandoned_runs"] = self._runner.abandoned_runs
        return stats

    def queued_by_priority(self) -> dict[Priority, int]:
        """Jobs waiting in the queue (the cluster's, on PostgreSQL), by priority."""
        return self._queue.depth_by_priority()

    @property
    def queue_capacity(self) -> int:
        return self._queue.capacity

    @property
    def active_workers(self) -> int:
        return len(self._leases)

    def heartbeat(self) -> None:
        """Beat once now (the heartbeat thread does this every third of a lease)."""
        self._leases.beat()

    # -- workers ------------------------------------------------------------------

    def _work(self, process: WorkerProcess | None) -> None:
        worker = f"{self.name}/{threading.current_thread().name}"
        try:
            while (job := self._claim(worker)) is not None:
                self._process(job, process)
        finally:
            if process is not None:
                process.close()

    def _claim(self, worker: str) -> Job | None:
        """The next job for `worker`; None once the service closes."""
        while True:
            try:
                return self._queue.claim(worker)
            except SQLAlchemyError as error:
                log.warning("%s could not claim a job: %s", worker, error)
                if self._closing.wait(CLAIM_RETRY_SECONDS):
                    return None

    def _process(self, job: Job, process: WorkerProcess | None) -> None:
        token = CancelToken()
        self._leases.add(job, token)
        try:
            self._runner.run(job, token, process)
        except Exception:  # noqa: BLE001 - the worker outlives any one job
            log.exception("worker could not process job %s", job.id)
        finally:
            self._leases.remove(job.id)

    def _join(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            tokens = self._leases.tokens()
            log.warning("drain deadline passed; requeueing %d running jobs", len(tokens))
            for token in tokens:
                token.cancel("shutdown")
            grace_deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
            for thread in self._threads:
                thread.join(max(0.0, grace_deadline - time.monotonic()))

    def _accept(
        self,
        generator: str,
        params: Mapping[str, Any],
        priority: Priority,
        owner: str,
        idempotency_key: str | None,
        max_queued: int | None,
    ) -> Job:
        """The new row, queued (with its position) and announced; or, for a repeated
        idempotency key, the job the first request created (marked `replayed`)."""
        if not self.accepting:
            raise ServiceStoppedError("the generation service is not accepting jobs")
        request_hash = None
        if idempotency_key is not None:
            request_hash = fingerprint(generator, params, priority)
            earlier = self._admission.earlier(owner, idempotency_key, request_hash)
            if earlier is not None:
                return earlier
        new = self._new_job(
            owner,
            generator,
            self._validate(generator, params),
            priority,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
        return self._admission.admit(new, max_queued, announce=self._announce)

    def _new_job(
        self,
        owner: str,
        generator: str,
        params: dict[str, Any],
        priority: Priority,
        **idempotency: str | None,
    ) -> Job:
        return Job(
            pk=0,
            id=uuid.uuid4().hex,
            owner=owner,
            generator=generator,
            params=params,
            priority=priority,
            status=JobStatus.QUEUED,
            created_at=self._clock(),
            **idempotency,
        )

    def _validate(self, generator_name: str, params: Mapping[str, Any]) -> dict[str, Any]:
        generator = self.generators.get(generator_name)
        if generator is None:
            names = ", ".join(self.generators.names())
            raise InvalidParamsError({"generator": f"unknown generator; available: {names}"})
        clean, errors = generator.validate(params)
        if errors:
            raise InvalidParamsError({f"params.{name[:64]}": text for name, text in errors.items()})
        return clean

    def _queued_eta(self, job: Job, position: int) -> float:
        run_seconds = self._run_seconds(job)
        return round(queued_eta(position, self.active_workers, self.worker_count, run_seconds), 1)

    def _retry_after(self) -> int:
        """Seconds until a queue slot is likely to free up: one run spread over the workers."""
        run_seconds = self._estimator.typical_seconds()
        return max(1, min(300, math.ceil(run_seconds / self.worker_count)))

    def _run_seconds(self, job: Job) -> float:
        generator = self.generators.get(job.generator)
        prior = generator.estimate_seconds(job.params) if generator else None
        return self._estimator.run_seconds(job.generator, prior)
