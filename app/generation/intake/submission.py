"""Taking a submission in: admit the row (admission.py), forecast its place, announce it,
then index it, in that order, so that its `queued` event comes before any worker can
claim it and publish `started`. Refusals are counted for the observers (metrics)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..errors import (
    IdempotencyKeyReusedError,
    InvalidParamsError,
    QueueFullError,
    QueuePausedError,
    ServiceStoppedError,
    TooManyJobsError,
)
from ..events.bus import EventBus, EventType
from ..events.observers import ObserverSet
from ..forecast.outlook import Outlook, Quote
from ..job import Job, Priority, Webhook
from ..queue.contract import JobQueue
from ..queue.pause import QueuePause
from .admission import Admission
from .gate import AdmissionGate

log = logging.getLogger(__name__)

# What `observers.rejected` is told when a submission is refused.
REJECTION_REASONS: dict[type[Exception], str] = {
    QueueFullError: "queue_full",
    ServiceStoppedError: "unavailable",
    InvalidParamsError: "invalid_params",
    TooManyJobsError: "too_many_jobs",
    IdempotencyKeyReusedError: "idempotency_key_reused",
    QueuePausedError: "paused",
}
_REFUSALS = tuple(REJECTION_REASONS)


class Intake:
    def __init__(
        self,
        admission: Admission,
        queue: JobQueue,
        outlook: Outlook,
        bus: EventBus,
        observers: ObserverSet,
        pause: QueuePause | None = None,
        gate: AdmissionGate | None = None,
    ) -> None:
        self._admission = admission
        self.gate = gate or AdmissionGate()
        self._pause = pause
        self._queue = queue
        self._outlook = outlook
        self._bus = bus
        self._observers = observers

    def submit(
        self,
        generator: str,
        params: Mapping[str, Any],
        priority: Priority,
        owner: str,
        idempotency_key: str | None,
        max_queued: int | None,
        accepting: bool,
        webhook: Webhook | None = None,
    ) -> Job:
        """The new job, written and queued, with its position and ETA; or the earlier
        job of a repeated idempotency key (marked `replayed`, not described)."""
        try:
            with self.gate.admitting():  # held until the row is written
                self._check(accepting)
                job = self._admission.accept(
                    generator, params, priority, owner, idempotency_key, max_queued, webhook
                )
        except _REFUSALS as refused:
            self._observers.rejected(REJECTION_REASONS[type(refused)])
            raise
        if job.replayed:
            return job
        entry = self._outlook.entry(job)
        # Announce before indexing: once indexed, a worker may claim it and publish `started`.
        try:
            described = self._outlook.admit(job, entry)
        except Exception:  # noqa: BLE001 - a failed forecast must not strand a stored job
            log.exception("could not forecast job %s; queueing it without an ETA", job.id)
            described = job
        self._bus.publish(
            job.id, EventType.QUEUED, position=described.position, eta_seconds=described.eta_seconds
        )
        self._observers.submitted(job)
        self._queue.put(entry)
        return described

    def quote(
        self,
        generator: str,
        params: Mapping[str, Any],
        priority: Priority,
        owner: str,
        max_queued: int | None,
        accepting: bool,
    ) -> Quote:
        self.gate.check()
        self._check(accepting)
        clean = self._admission.validate(generator, params)
        self._admission.check(owner, max_queued)
        return self._outlook.quote(generator, clean, priority, owner)

    def _check(self, accepting: bool) -> None:
        """Refuse while the service stops or an operator paused the queue."""
        if not accepting:
            raise ServiceStoppedError("the generation service is not accepting jobs")
        paused = self._pause.state() if self._pause is not None else None
        if paused is not None:
            raise QueuePausedError(paused.at.isoformat(timespec="seconds"))
