"""Recording a run's outcome while the database may be dropping out under it.

An outcome write (finish, requeue) of a run is retried on database errors for up to one
lease: after that the lease has run out anyway and another process may take the job
back. A write whose first try may have committed unseen (the answer was lost with the
connection) is re-read before it is called lost: if the row shows this run's epoch with
this outcome, it was ours.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from ..job import Job, JobStatus
from ..store.jobs import JobStore

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

T = TypeVar("T")


class OutcomeWriter:
    def __init__(self, store: JobStore, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    def finish(
        self,
        job: Job,
        status: JobStatus,
        *,
        then: Callable[[Any], None] | None = None,
        **outcome: Any,
    ) -> Job | None:
        """Record the outcome (and `then`, in its transaction: JobStore.finish); None if
        this run no longer owns the job."""
        tries = 0

        def write() -> Job | None:
            nonlocal tries
            tries += 1
            return self._store.finish(job, status, self._clock(), then=then, **outcome)

        final = retrying(write, self._patience())
        if final is None and tries > 1:
            current = retrying(lambda: self._store.get(job.id), self._patience())
            if current and (current.lease_epoch, current.status) == (job.lease_epoch, status):
                return current
        return final

    def requeue(self, job: Job) -> Job | None:
        """Give the job back to the queue; None if this run no longer owns it."""
        return retrying(lambda: self._store.requeue(job), self._patience())

    def _patience(self) -> float:
        return self._store.lease.total_seconds()


def retrying(call: Callable[[], T], patience: float) -> T:
    """`call()`, retried on database errors for up to `patience` seconds."""
    deadline = time.monotonic() + patience
    for attempt in itertools.count():
        try:
            return call()
        except SQLAlchemyError as error:
            if time.monotonic() >= deadline:
                raise
            delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
            log.warning("database write failed (%s); retrying in %ss", error, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # itertools.count() never ends
