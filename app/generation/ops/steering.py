"""Operators' actions on the queue beyond pause and cancel (service.py has those):
retry a failed job, give a queued job another priority, drain a machine.

A retry is a new attempt of the same job, not a copy: the owner's job id, its
idempotency key, its event stream and its webhook stay the ones the client already
knows, as in Oban, Sidekiq and Solid Queue. Its failed attempt leaves its `failed`
event and webhook delivery behind; the new attempt runs under a new lease epoch, so
its files and deliveries never mix with the old ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from ..errors import JobNotFoundError, JobStatusConflictError, MachineNotFoundError
from ..events.bus import EventBus
from ..execution.relay import event_from_row
from ..forecast.outlook import Outlook
from ..job import Job, Priority
from ..queue.contract import JobQueue
from ..queue.pause import QueuePause
from ..scheduling.policy import admission_key
from ..store.jobs import JobStore
from ..store.processes import ProcessStore
from ..store.queue_state import Paused, QueueStateStore

log = logging.getLogger(__name__)


class QueueSteering:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        outlook: Outlook,
        bus: EventBus,
        *,
        states: QueueStateStore,
        processes: ProcessStore,
        pause: QueuePause,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._queue = queue
        self._outlook = outlook
        self._bus = bus
        self._states = states
        self._processes = processes
        self._pause = pause
        self._clock = clock

    def retry(self, job_id: str) -> Job:
        """Queue a failed job again (see the module docstring), behind its owner's
        queued jobs of its priority; JobStatusConflictError unless it failed."""
        job = self._existing(job_id)
        # Keyed as if its owner submitted it now: behind the owner's queued jobs of its
        # priority, spaced by its predicted run seconds (scheduling/policy.py).
        share = self._outlook.share(job.generator, job.params)
        tail = self._store.queued_tail(job.owner, job.priority)
        now = self._clock().timestamp()
        key = admission_key(now, job.priority, self._queue.aging_seconds, tail, share)
        retried = self._store.retry_failed(job_id, key)
        if retried is None:
            raise JobStatusConflictError(
                job_id, self._existing(job_id).status.value, "failed", "be retried"
            )
        self._queue.returned([self._outlook.entry(retried)])
        kind, data = event_from_row(retried)
        self._bus.publish(job_id, kind, **data, requeued=True, retried=True)
        return retried

    def reprioritize(self, job_id: str, priority: Priority) -> Job:
        """Give a queued job another priority; it keeps the wait it has done (its key
        keeps its start: job_writes.REPRIORITIZE). JobStatusConflictError unless queued."""
        self._existing(job_id)
        moved = self._store.reprioritize(job_id, int(priority), self._queue.aging_seconds)
        if moved is None:
            status = self._existing(job_id).status.value
            raise JobStatusConflictError(job_id, status, "queued", "change priority")
        # Re-index it at its new key (the claim on PostgreSQL reads the row itself).
        self._queue.remove(job_id)
        self._queue.returned([self._outlook.entry(moved)])
        return moved

    def drain(self, machine: str, by: str | None) -> Paused:
        """Drain `machine`: its workers finish their jobs and claim no more, until
        `undrain`; across its restarts. MachineNotFoundError if no service reports from it."""
        if machine not in self._processes.machines():
            raise MachineNotFoundError(machine)
        drained = self._states.drain(machine, by, self._clock())
        self._pause.refresh()
        return drained

    def undrain(self, machine: str) -> bool:
        """End `machine`'s drain (False if it was not drained); its workers claim again."""
        ended = self._states.undrain(machine)
        self._pause.refresh()
        self._queue.wake()
        return ended

    def drains(self) -> dict[str, Paused]:
        return self._states.drains()

    def _existing(self, job_id: str) -> Job:
        job = self._store.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job
