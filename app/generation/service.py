"""GenerationService: the framework-free front door of the core.

It accepts jobs (row first, then queue index), runs them on a pool of worker threads,
and answers questions about jobs and itself: position and ETA come from a forecast of
the scheduling policy (forecast.py). Nothing here knows about HTTP.

Life cycle, as `concurrent.futures.ThreadPoolExecutor`: construct, `start()`, use,
`shutdown(wait=True)`. Submitting before start or after shutdown raises
`ServiceStoppedError`. A `gen-scheduler` thread wakes on queue changes (at most every
ANNOUNCE_INTERVAL) and every TICK_SECONDS to resize the pool and push new positions.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

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
from .events import EventBus
from .generators import GeneratorRegistry
from .jobs import JobStore
from .keys import ANONYMOUS
from .models import Job, JobStatus, Priority
from .observers import ObserverSet
from .outlook import Outlook, Quote
from .processes import WorkerProcess
from .queue import DEFAULT_AGING_SECONDS, JobQueue
from .results import ResultStore
from .retention import ResultSweeper
from .runner import CancelToken, JobRunner
from .scheduling import QueueEntry
from .stats import service_stats
from .ticker import Ticker
from .timeouts import SHUTDOWN_GRACE_SECONDS
from .workers import WorkerPool, WorkerScaler

log = logging.getLogger(__name__)

CPU_ISOLATION_MODES = ("process", "thread")
CLAIM_RETRY_SECONDS = 1.0
TICK_SECONDS = 1.0
ANNOUNCE_INTERVAL = 0.25
# What `observers.rejected` is told when a submission is refused.
REJECTION_REASONS: dict[type[Exception], str] = {
    QueueFullError: "queue_full",
    ServiceStoppedError: "unavailable",
    InvalidParamsError: "invalid_params",
    TooManyJobsError: "too_many_jobs",
    IdempotencyKeyReusedError: "idempotency_key_reused",
}
_REFUSALS = tuple(REJECTION_REASONS)


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
        job_timeout: float | None = None,
        aging_seconds: float = DEFAULT_AGING_SECONDS,
        scale_up_seconds: float = 5.0,
        idle_worker_seconds: float = 60.0,
        bus: EventBus | None = None,
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
        self.max_attempts = max_attempts
        self.cpu_isolation = cpu_isolation
        self._clock = clock
        self._queue = JobQueue(
            queue_size, aging_seconds=aging_seconds, clock=self._now, on_change=self._poke
        )
        self._admission = Admission(store, self._queue, self._retry_after)
        self._runner = JobRunner(
            store, results, generators, self.bus, clock, self.observers, timeout=job_timeout
        )
        self.sweeper = None
        if result_ttl:
            self.sweeper = ResultSweeper(
                store, results, result_ttl, clock, self.observers, interval=sweep_interval
            )
        scaler = WorkerScaler(
            workers, workers_max or workers, scale_up_seconds, idle_worker_seconds
        )
        self._pool = WorkerPool(
            self._queue, self._process, scaler, self._now, helper=self._worker_process
        )
        self.outlook = Outlook(
            self._queue, generators, self.bus, lambda: self._pool.count, self._now
        )
        self._running: dict[str, CancelToken] = {}
        self._lock = threading.Lock()
        self._state = "new"
        self._scheduler = Ticker(
            self.tick, "gen-scheduler", every=TICK_SECONDS, min_interval=ANNOUNCE_INTERVAL
        )

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> None:
        """Recover what a previous process left behind, then start the threads."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"cannot start a service that is {self._state}")
            self._state = "running"
        requeued, failed = self.store.recover_running(self.max_attempts, self._clock())
        if requeued or failed:
            log.warning("recovered interrupted jobs: %d requeued, %d failed", requeued, failed)
        for job in self.store.queued():
            self._queue.put(self.outlook.entry(job), reserved=False)
        self._pool.start()
        self._scheduler.start()
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
        self._scheduler.stop(timeout=0 if not wait else SHUTDOWN_GRACE_SECONDS)
        if self.sweeper is not None:
            self.sweeper.stop()
        if wait:
            self._join(timeout)
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
        try:
            job = self._accept(generator, params, priority, owner, idempotency_key, max_queued)
        except _REFUSALS as refused:
            self.observers.rejected(REJECTION_REASONS[type(refused)])
            raise
        if job.replayed:
            return self.describe(job)
        # Announce before indexing: once indexed, a worker may claim it and publish `started`.
        try:
            described = self.outlook.admit(job)
        except Exception:  # noqa: BLE001 - a failed forecast must not strand a stored job
            log.exception("could not forecast job %s; queueing it without an ETA", job.id)
            described = job
        self.bus.publish(
            job.id, "queued", position=described.position, eta_seconds=described.eta_seconds
        )
        self.observers.submitted(job)
        self._queue.put(self.outlook.entry(job))
        return described

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
        self._check_accepting()
        clean = self._validate(generator, params)
        self._admission.check(owner, max_queued)
        return self.outlook.quote(generator, clean, priority, owner)

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
            cancelled = self.store.cancel_queued(job_id, self._clock())
            if cancelled is not None:
                self._queue.remove(job_id)
                self.outlook.withdraw(job_id)
                self.outlook.accuracy.forget(job_id)
                self.bus.publish(job_id, "cancelled")
                return self.describe(cancelled)
            job = self.get(job_id)  # it started meanwhile
        if job.status is JobStatus.RUNNING:
            flagged = self.store.request_cancel(job_id)
            with self._lock:
                token = self._running.get(job_id)
            if token is not None:
                token.cancel("cancelled")
            if flagged is not None:
                return self.describe(flagged)
            job = self.get(job_id)  # it finished meanwhile
        raise JobFinishedError(job_id, job.status.value)

    def describe(self, job: Job) -> Job:
        """The job with its current queue position and ETA (seconds to finish) filled in."""
        return self.outlook.describe(job)

    def stats(self) -> dict[str, Any]:
        scaler = self._pool.scaler
        stats = service_stats(
            self.store,
            running=self.accepting,
            workers=self._pool.count,
            workers_range=(scaler.minimum, scaler.maximum),
            active_workers=self.active_workers,
            queue_size=len(self._queue),
            queue_capacity=self._queue.capacity,
            queued_by_priority=self.queued_by_priority(),
            result_ttl=self.sweeper.ttl if self.sweeper else None,
            aging_seconds=self._queue.aging_seconds,
            eta_accuracy=self.outlook.summary(),
        )
        stats["abandoned_runs"] = self._runner.abandoned_runs
        return stats

    def queued_by_priority(self) -> dict[Priority, int]:
        """Jobs waiting in this process's queue, by priority."""
        return self._queue.depth_by_priority()

    @property
    def queue_capacity(self) -> int:
        return self._queue.capacity

    @property
    def active_workers(self) -> int:
        with self._lock:
            return len(self._running)

    @property
    def worker_count(self) -> int:
        return self._pool.count

    def tick(self) -> None:
        """Resize the worker pool and push changed positions; the scheduler thread's step."""
        self._pool.rebalance()
        self.outlook.announce()

    # -- workers ------------------------------------------------------------------

    def _worker_process(self, worker: str) -> WorkerProcess | None:
        """The child process a worker thread runs CPU-bound generators in, if isolated.
        Started by its first CPU-bound job, so always after gunicorn's fork."""
        if self.cpu_isolation == "process" and self.generators.has_cpu_bound:
            return WorkerProcess(worker.replace("worker", "process"))
        return None

    def _process(
        self, entry: QueueEntry, worker: str, process: WorkerProcess | None = None
    ) -> None:
        taken = self._now()
        self.outlook.withdraw(entry.job_id)  # no `queued` event may follow its `started`
        try:
            job = self._runner.claim(entry.job_id, worker)
        except SQLAlchemyError:
            # The row is still queued; put it back where it was and let the database recover.
            log.exception(
                "claiming job %s failed; retrying in %ss", entry.job_id, CLAIM_RETRY_SECONDS
            )
            time.sleep(CLAIM_RETRY_SECONDS)
            self._queue.put(entry, reserved=False)
            return
        if job is None:
            return
        token = CancelToken()
        with self._lock:
            self._running[job.id] = token
        self.outlook.started(entry, taken)
        final = None
        try:
            final = self._runner.run(job, token, process)
        finally:
            with self._lock:
                del self._running[job.id]
            self.outlook.finished(entry, final)

    def _join(self, timeout: float | None) -> None:
        if not self._pool.join(timeout):
            with self._lock:
                tokens = list(self._running.values())
            log.warning("drain deadline passed; requeueing %d running jobs", len(tokens))
            for token in tokens:
                token.cancel("shutdown")
            self._pool.join(SHUTDOWN_GRACE_SECONDS)

    def _accept(
        self,
        generator: str,
        params: Mapping[str, Any],
        priority: Priority,
        owner: str,
        idempotency_key: str | None,
        max_queued: int | None,
    ) -> Job:
        """The new row, its queue slot reserved but not yet indexed; or, for a repeated
        idempotency key, the job the first request created (marked `replayed`)."""
        self._check_accepting()
        request_hash = None
        if idempotency_key is not None:
            request_hash = fingerprint(generator, params, priority)
            earlier = self._admission.earlier(owner, idempotency_key, request_hash)
            if earlier is not None:
                return earlier
        new = Job(
            pk=0,
            id=uuid.uuid4().hex,
            owner=owner,
            generator=generator,
            params=self._validate(generator, params),
            priority=priority,
            status=JobStatus.QUEUED,
            created_at=self._clock(),
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
        return self._admission.admit(new, max_queued)

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise ServiceStoppedError("the generation service is not accepting jobs")

    def _validate(self, generator_name: str, params: Mapping[str, Any]) -> dict[str, Any]:
        generator = self.generators.get(generator_name)
        if generator is None:
            names = ", ".join(self.generators.names())
            raise InvalidParamsError({"generator": f"unknown generator; available: {names}"})
        clean, errors = generator.validate(params)
        if errors:
            raise InvalidParamsError({f"params.{name[:64]}": text for name, text in errors.items()})
        return clean

    def _retry_after(self) -> int:
        return self.outlook.retry_after()

    def _poke(self) -> None:
        self._scheduler.poke()

    def _now(self) -> float:
        return self._clock().timestamp()
