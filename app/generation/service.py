"""GenerationService: the framework-free front door of the core.

It accepts jobs (intake/admission.py: row first, then queue index), runs them on a pool of
worker threads (execution/engine.py), and answers questions about jobs and itself: position
and ETA come from a forecast of the scheduling policy (forecast/outlook.py). Nothing here knows
about HTTP.

On PostgreSQL (a `listener` is given) several services, in several processes and on
several machines, share one database and so one queue (queue/postgres.py), and see each
other's job events (execution/relay.py); each is named (`name`, default host:pid) so rows show
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
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidParamsError, JobFinishedError, JobNotFoundError
from .events.bus import EventBus, EventType
from .events.observers import ObserverSet
from .execution.engine import Execution
from .forecast.outlook import Outlook, Quote
from .forecast.run_times import JobCosts, job_costs
from .generators import GeneratorRegistry
from .intake.admission import Admission
from .intake.keys import ANONYMOUS, KeyStore, Principal, limits_for
from .intake.submission import Intake
from .job import Job, JobStatus, Priority, Webhook
from .notify.dispatcher import WebhookDispatcher
from .notify.subscription import webhook_for
from .ops.operations import Operations
from .ops.stats import service_stats
from .queue.contract import JobQueue
from .queue.memory import MemoryQueue
from .queue.pause import QueuePause
from .results.job_files import JobFiles
from .results.retention import ResultSweeper
from .results.storage import ResultStore
from .settings import ServiceSettings
from .store import schema
from .store.deliveries import DeliveryStore
from .store.jobs import JobStore
from .store.listener import Listener
from .store.queue_state import Paused, QueueStateStore

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class GenerationService:
    def __init__(
        self,
        store: JobStore,
        results: ResultStore,
        generators: GeneratorRegistry,
        settings: ServiceSettings | None = None,
        *,
        bus: EventBus | None = None,
        listener: Listener | None = None,
        name: str | None = None,
        machine: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """The service over `store` and `results`, running `generators` as `settings`
        say. With a `listener` (PostgreSQL) the queue and job events are shared with
        every other service on the database. `machine` (default: the host name) is what
        an operator's drain names; `name` (default: host:pid) this one process."""
        self.settings = settings = settings or ServiceSettings()
        self.store = store
        self.results = results
        self.files = JobFiles(results)  # a job's files: stored as they land, then its ZIP's
        self.generators = generators
        self.bus = bus or EventBus()
        self.observers = ObserverSet()
        self.machine = machine or socket.gethostname()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._clock = clock
        cost = job_costs(generators)
        self._queue = self._make_queue(listener, cost)
        # An operator's pause holds in every process; a resume wakes the waiting workers.
        states = QueueStateStore(store.engine, store.writing)
        self.pause = QueuePause(states, clock, machine=self.machine, on_resume=self._queue.wake)
        self.deliveries = DeliveryStore(store.engine, store.writing)
        self.keys = KeyStore(store.engine, clock)
        self.webhooks = WebhookDispatcher(
            self.deliveries,
            settings.webhooks,
            key_secrets=self.keys.webhook_secrets,
            job_of=self.get,
            clock=clock,
        )
        self.observers.add(self.webhooks)
        self.sweeper = None
        if settings.result_ttl:
            self.sweeper = ResultSweeper(
                store,
                results,
                settings.result_ttl,
                clock,
                self.observers,
                interval=settings.sweep_interval,
                also=self.deliveries.prune,
            )
        self.outlook = Outlook(
            self._queue, cost, self.bus, lambda: self._execution.pool.count, self._now
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
            self.pause,
        )
        self._execution = Execution(
            store,
            results,
            generators,
            self._queue,
            self.outlook,
            self.bus,
            self.observers,
            settings,
            clock=clock,
            name=self.name,
            listener=listener,
            left_queue=self._left_queue,
            pause=self.pause,
        )
        self.ops = Operations(
            store,
            self._queue,
            self.outlook,
            self.bus,
            pause=self.pause,
            states=states,
            deliveries=self.deliveries,
            name=self.name,
            machine=self.machine,
            clock=clock,
            workers=lambda: self.worker_count,
            result_ttl=settings.result_ttl,
            gate=self._intake.gate,
            idle_stop_seconds=settings.idle_stop_seconds,
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
        self.webhooks.start()
        self.ops.start()
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
        self.webhooks.stop()
        self.ops.stop()
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
        priority: Priority | None = None,
        principal: Principal | None = None,
        owner: str = ANONYMOUS,
        idempotency_key: str | None = None,
        max_queued: int | None = None,
        webhook: str | None = None,
        webhook_events: Any = None,
    ) -> Job:
        """Validate, write the row, then index it. The returned job is durable.

        For a `principal` (a client's request) the admission policy applies: the tier's
        ceiling bounds `priority` (PriorityNotAllowedError; none asked: the ceiling), the
        job is the principal's, and a key's owner may have `max_queued_per_key` queued
        jobs (TooManyJobsError). Without one the call is trusted: `owner` and the cap
        `max_queued` as given, NORMAL priority unless asked.

        With an `idempotency_key`, a repeat of the same request by the same owner returns
        the job the first one created (marked `replayed`), even after a restart; another
        request under the same key raises IdempotencyKeyReusedError.

        `webhook` (an https URL; a key's default target if not given) is told of the
        `webhook_events` the job goes through (default: `completed`); InvalidParamsError
        if the target is not one the service may call (notify/targets.py).
        """
        quota = self.settings.max_queued_per_key
        priority, owner, max_queued = limits_for(principal, priority, owner, max_queued, quota)
        try:
            subscription = self._webhook(webhook, webhook_events, principal)
        except InvalidParamsError:
            self.observers.rejected("invalid_params")
            raise
        job = self._intake.submit(
            generator,
            params,
            priority,
            owner,
            idempotency_key,
            max_queued,
            self.accepting,
            subscription,
        )
        return self.describe(job) if job.replayed else job

    def quote(
        self,
        generator: str,
        params: Mapping[str, Any],
        *,
        priority: Priority | None = None,
        principal: Principal | None = None,
        owner: str = ANONYMOUS,
        max_queued: int | None = None,
        webhook: str | None = None,
        webhook_events: Any = None,
    ) -> Quote:
        """What `submit` would answer now, without queueing anything; raises as it would."""
        quota = self.settings.max_queued_per_key
        priority, owner, max_queued = limits_for(principal, priority, owner, max_queued, quota)
        self._webhook(webhook, webhook_events, principal)
        return self._intake.quote(generator, params, priority, owner, max_queued, self.accepting)

    def get(self, job_id: str, *, owner: str | None = None) -> Job:
        """The job, described; JobNotFoundError if missing or owned by someone else."""
        return self.describe(self._stored(job_id, owner))

    def _stored(self, job_id: str, owner: str | None) -> Job:
        """The job's row, not described (a forecast is for showing, not for deciding)."""
        job = self.store.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFoundError(job_id)
        return job

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
        job = self._stored(job_id, owner)
        if job.status is JobStatus.QUEUED:
            cancelled = self.store.cancel_queued(job_id, self._clock())
            if cancelled is not None:
                if cancelled.webhook is not None:
                    self.webhooks.wake()  # its `completed` was written with the cancel
                self._left_queue(job_id)
                self.outlook.accuracy.forget(job_id)
                self.bus.publish(job_id, EventType.CANCELLED)
                return self.describe(cancelled)
            job = self._stored(job_id, None)  # it started meanwhile
        if job.status is JobStatus.RUNNING:
            flagged = self.store.request_cancel(job_id)
            self._execution.cancel(job_id)
            if flagged is not None:
                return self.describe(flagged)
            job = self._stored(job_id, None)  # it finished meanwhile
        raise JobFinishedError(job_id, job.status.value)

    def pause_queue(self, by: str | None) -> Paused:
        """Pause the whole queue (every process on the database): submissions get
        QueuePausedError, workers claim nothing, running jobs go on to their end. The
        pause holds until `resume_queue`, across restarts."""
        paused = self.pause.pause(by)
        self._queue.wake()  # waiting workers look at the pause now
        return paused

    def resume_queue(self) -> bool:
        """Resume a paused queue (False if it was not paused); workers claim again."""
        return self.pause.resume()

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
        stats["webhooks"] = self.deliveries.count_by_status()
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

    def _make_queue(self, listener: Listener | None, cost: JobCosts) -> JobQueue:
        capacity = self.settings.queue_size
        options: dict[str, Any] = {
            "aging_seconds": self.settings.aging_seconds,
            "clock": self._now,
            "on_change": self._poke,
            "cost": cost,
        }
        if listener is None:
            return MemoryQueue(capacity, store=self.store, **options)
        # Only here: the module builds its claim statement with SQLAlchemy's PostgreSQL
        # dialect at import, memory that a service on SQLite would hold for nothing.
        from .queue.postgres import PostgresQueue

        return PostgresQueue(self.store, capacity, listener, **options)

    def _webhook(self, url: Any, events: Any, principal: Principal | None) -> Webhook | None:
        """The submission's webhook, checked (a key's default if it names none);
        InvalidParamsError if it cannot be one, or could not be signed."""
        return webhook_for(
            url,
            events,
            key_id=principal.key_id if principal else None,
            key_default=principal.webhook_url if principal else None,
            settings=self.webhooks.settings,
            resolve=self.webhooks.resolve,  # the resolver the deliveries will use
        )

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
