"""Leases: the runs this process owns, kept alive by a heartbeat; other runs taken back.

Every claim gives the run a lease of `JobStore.lease` (JOB_LEASE_SECONDS). The heartbeat
thread of each process, every third of a lease:

1. renews the leases of the runs it owns, fenced by their epoch; a run whose lease was
   not renewed lost it (another process took the job back), so it is told to stop, and
   whatever it writes later is rejected anyway (store/jobs.py fences every write);
2. tells runs whose cancellation was asked on another process to stop;
3. takes back jobs whose lease expired (their process died): requeued, or failed after
   JOB_MAX_ATTEMPTS, or cancelled if that was asked; and deletes what the dead run left
   (the files and preview it stored as it went, a ZIP it saved but never recorded),
   which nothing else would: only a run that ends deletes its own.

Renewal and take-back use the same clock, so a lease is lost only by a process that
missed about three heartbeats in a row.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from ..events.bus import EventBus
from ..job import Job, JobStatus
from ..queue.contract import JobQueue
from ..results.storage import ResultStore
from ..scheduling.policy import QueueEntry
from ..store.jobs import JobStore
from .relay import event_from_row
from .run_context import CancelToken

log = logging.getLogger(__name__)

BEATS_PER_LEASE = 3


@dataclass(frozen=True)
class Run:
    job: Job
    token: CancelToken


class LeaseKeeper:
    """The runs of this process (lock-guarded) and the heartbeat that keeps them."""

    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        bus: EventBus,
        results: ResultStore,
        *,
        max_attempts: int,
        clock: Callable[[], datetime],
        entry: Callable[[Job], QueueEntry],
    ) -> None:
        self._queue = queue
        self._entry = entry
        self._store = store
        self._bus = bus
        self._results = results
        self._max_attempts = max_attempts
        self._clock = clock
        self._runs: dict[str, Run] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._beat_loop, name="gen-heartbeat", daemon=True)

    @property
    def interval(self) -> float:
        return self._store.lease.total_seconds() / BEATS_PER_LEASE

    def add(self, job: Job, token: CancelToken) -> None:
        with self._lock:
            self._runs[job.id] = Run(job, token)

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._runs.pop(job_id, None)

    def token(self, job_id: str) -> CancelToken | None:
        with self._lock:
            run = self._runs.get(job_id)
        return run.token if run else None

    def jobs(self) -> list[Job]:
        """The runs this process owns, as claimed."""
        with self._lock:
            return [run.job for run in self._runs.values()]

    def tokens(self) -> list[CancelToken]:
        with self._lock:
            return [run.token for run in self._runs.values()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def beat(self) -> None:
        """One heartbeat: renew, pass on cancellations, take back expired jobs."""
        self.renew()
        self.take_back_expired()

    def renew(self) -> None:
        with self._lock:
            runs = list(self._runs.values())
        owned = self._store.renew_leases([run.job for run in runs], self._clock())
        renewed = {job.id: job for job in owned}
        for run in runs:
            current = renewed.get(run.job.id)
            if current is None:
                log.warning("job %s lost its lease; stopping its run", run.job.id)
                run.token.cancel("lease_lost")
            elif current.cancel_requested:
                run.token.cancel("cancelled")

    def take_back_expired(self) -> list[Job]:
        taken = self._store.reclaim(self._max_attempts, self._clock())
        self.announce(taken)
        return taken

    def announce(self, taken: list[Job]) -> None:
        """Make jobs taken back claimable again, tell their followers, and delete what
        their dead runs left."""
        if not taken:
            return
        ends = Counter(job.status for job in taken)
        log.warning(
            "took back %d jobs whose process stopped: %d requeued, %d failed, %d cancelled",
            len(taken),
            ends[JobStatus.QUEUED],
            ends[JobStatus.FAILED],
            ends[JobStatus.CANCELLED],
        )
        self._queue.returned(self._entry(job) for job in taken if job.status is JobStatus.QUEUED)
        for job in taken:
            kind, data = event_from_row(job)
            if job.status is JobStatus.QUEUED:
                data["requeued"] = True
            self._bus.publish(job.id, kind, **data)
        for job in taken:  # the row still names the dead run's epoch; a new run gets the next
            self._discard_dead_run(job)

    def _discard_dead_run(self, job: Job) -> None:
        try:
            self._results.discard_run(job.id, job.lease_epoch)
        except (OSError, SQLAlchemyError) as error:
            log.warning("could not delete what the dead run of job %s left: %s", job.id, error)

    def _beat_loop(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.beat()
            except SQLAlchemyError as error:
                log.warning("heartbeat could not reach the database: %s", error)
            except Exception:  # noqa: BLE001 - the heartbeat must outlive any one failure
                log.exception("heartbeat failed")
