"""Where accepted jobs wait for a worker: one contract, two backends.

`JobQueue` documents what the service needs (huey's BaseStorage shape); the backends only
implement it, and one contract test class runs against both (tests/test_queue_contract.py):

- `MemoryQueue` (queue/memory.py): a bounded, thread-safe, in-memory index over the
  queued rows of one process. The embedded default (SQLite, one process).
- `PostgresQueue` (queue/postgres.py): idle workers claim the next row straight from the
  table with `FOR UPDATE SKIP LOCKED`, so every process and machine on the database
  shares one queue; a local copy of the queued rows serves forecasts only.

Either way the row is written first and is the truth; a claim moves it to `running`
under a new lease epoch (store/jobs.py). The order is the scheduling policy's: the smallest
key fixed at admission, then FIFO (scheduling/policy.py), in memory and in SQL alike.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ..job import Job, Priority
from ..scheduling.policy import QueueEntry, SchedulingIndex

# Changes kept for forecasts that follow the queue change by change (forecast/forecaster.py).
JOURNAL_SIZE = 1024
Stop = Callable[[], bool]
# (version, "put" | "get" | "remove", entry): one change of the queued set.
Change = tuple[int, str, QueueEntry]


class JobQueue(abc.ABC):
    """The queue of one service. `capacity` bounds queued (not running) jobs: this
    process's on the memory backend, the whole cluster's on a shared one.

    `version` grows with every change of the queued set as this process sees it;
    forecasts cache on it (forecast/forecaster.py).
    """

    shared = False  # whether several processes share this queue
    capacity: int
    version: int

    @property
    @abc.abstractmethod
    def aging_seconds(self) -> float: ...

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    @abc.abstractmethod
    def admit(self, job: Job, *, share: float, max_queued: int | None = None) -> Job | None:
        """Write `job`'s row, keyed by the scheduling policy (`share`: its predicted run
        seconds on one worker), if a slot is free and its owner has fewer than
        `max_queued` queued jobs, in one step as far as those counts go. Returns the
        stored job (with `pk` and `sort_key`), or None if nothing was written because the
        owner's idempotency key is taken. Raises QueueFullError, TooManyJobsError, or
        ServiceStoppedError once closed. The job is not claimable through `claim()`
        before `put()` (memory) or before this returns (shared)."""

    @abc.abstractmethod
    def check_room(self) -> None:
        """Raise as `admit()` would for a full or closed queue, holding nothing."""

    @abc.abstractmethod
    def put(self, entry: QueueEntry) -> None:
        """Index a job `admit()` wrote, once its `queued` event is out."""

    @abc.abstractmethod
    def claim(
        self, worker: str, *, stop: Stop = lambda: False, timeout: float | None = None
    ) -> Job | None:
        """Claim the job the policy starts next for `worker` and return it running.
        Waits for one; None once closed, after `timeout`, or when `stop()` is true
        (`wake()` makes waiters look at it). Database errors propagate and leave the
        queue as it was."""

    @abc.abstractmethod
    def recover(self, max_attempts: int) -> list[Job]:
        """At start: take back jobs a dead process left running (as far as this backend
        can know they are dead), and index every queued row. Returns the jobs taken back."""

    @abc.abstractmethod
    def returned(self, entries: Iterable[QueueEntry]) -> None:
        """Rows that went back to `queued` (expired leases, a drain): claimable again."""

    @abc.abstractmethod
    def remove(self, job_id: str) -> bool:
        """Forget a job that left the queue (cancelled, or claimed elsewhere)."""

    @abc.abstractmethod
    def refresh(self, *, force: bool = False) -> None:
        """Bring the local view up to date with the database (shared backends), unless
        it was brought up to date too recently for what that costs (`force`: now)."""

    @abc.abstractmethod
    def snapshot(self) -> tuple[int, SchedulingIndex]:
        """(version, a private copy of the index) for forecasting."""

    @abc.abstractmethod
    def changes_since(self, version: int) -> list[Change] | None:
        """The changes after `version`, oldest first; None if this queue cannot say
        (they are too old, or the queue was re-read as a whole since)."""

    @abc.abstractmethod
    def depth_by_priority(self) -> dict[Priority, int]: ...

    @abc.abstractmethod
    def key_for(self, owner: str, priority: int, now: float, share: float) -> float:
        """The scheduling key a job admitted now would get, as far as this process
        knows the queue (for quotes; the INSERT computes the real one)."""

    @abc.abstractmethod
    def wake(self) -> None:
        """Make every waiting `claim()` re-check its `stop` condition."""

    @abc.abstractmethod
    def close(self) -> None:
        """Wake every waiting `claim()` with None; later admissions raise."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __contains__(self, job_id: object) -> bool: ...


def as_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def changes_after(journal: deque[Change], current: int, version: int) -> list[Change] | None:
    """The changes of `journal` (consecutive versions up to `current`) after `version`."""
    if version == current:
        return []
    if not journal or journal[0][0] > version + 1 or version > current:
        return None
    # Versions in the journal are consecutive: the wanted ones are its last few.
    size = len(journal)
    return [journal[n] for n in range(size - (current - version), size)]


def entry_of(job: Job, cost: Callable[[str, dict[str, Any]], float]) -> QueueEntry:
    """A job as the scheduler sees it, priced in its generator's cost unit."""
    return QueueEntry(
        job.id,
        job.priority,
        job.pk,
        job.owner,
        job.created_at.timestamp(),
        job.generator,
        cost(job.generator, job.params),
        job.sort_key,
    )
