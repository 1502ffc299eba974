"""Where accepted jobs wait for a worker: one contract, two backends.

`JobQueue` documents what the service needs (huey's BaseStorage shape); the backends only
implement it and one contract test class runs against both (tests/test_queue_contract.py):

- `MemoryQueue` (below): an in-memory priority index over the queued rows of one process.
  The embedded default (SQLite, one process).
- `PostgresQueue` (queue_postgres.py): no index at all; idle workers claim the next row
  straight from the table with `FOR UPDATE SKIP LOCKED`, so every process and machine on
  the database shares one queue.

Either way the row is written first and is the truth; a claim moves it to `running` under
a new lease epoch (jobs.py), and the queue only decides which row comes next.
"""

from __future__ import annotations

import abc
import heapq
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError

from .errors import QueueFullError, ServiceStoppedError
from .jobs import JobStore
from .models import Job, JobStatus, Priority

Clock = Callable[[], datetime]
# Called with a written job and its position before any worker can claim it.
Announce = Callable[[Job, int], None]


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobQueue(abc.ABC):
    """The queue of one service. `capacity` bounds queued (not running) jobs."""

    def __init__(self, store: JobStore, capacity: int, *, clock: Clock = utcnow) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.store = store
        self.capacity = capacity
        self._clock = clock

    @abc.abstractmethod
    def recover(self, max_attempts: int) -> list[Job]:
        """At start: take back jobs a dead process left running (as far as this backend can
        know they are dead) and make every queued row claimable. Returns the jobs taken back."""

    @abc.abstractmethod
    def submit(self, job: Job, *, announce: Announce | None = None) -> tuple[Job, int]:
        """Write `job` as a queued row and make it claimable; return it with its `pk` and
        its position. `announce(job, position)` runs before any worker can claim it, so
        what it publishes comes before `started`. QueueFullError when `capacity` jobs
        are queued; ServiceStoppedError once closed."""

    @abc.abstractmethod
    def claim(self, worker: str, timeout: float | None = None) -> Job | None:
        """Claim the next job for `worker` (best effective priority, then oldest) and return
        it running; wait up to `timeout` seconds for one. None on timeout or once closed.
        Database errors propagate, and leave the queue as it was."""

    @abc.abstractmethod
    def returned(self, jobs: Iterable[Job]) -> None:
        """Rows that went back to `queued` (reclaimed leases): make them claimable again."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job; None if it was not queued (any more)."""

    @abc.abstractmethod
    def position(self, job: Job) -> int | None:
        """How many queued jobs will start before `job`; None if it is not queued."""

    @abc.abstractmethod
    def depth_by_priority(self) -> dict[Priority, int]:
        """Queued jobs per priority level."""

    @abc.abstractmethod
    def close(self) -> None:
        """Wake every waiting `claim()` with None; later submissions raise."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Queued jobs."""


class MemoryQueue(JobQueue):
    """A heap of `[priority, pk, job_id]` (huey's MemoryStorage): lowest priority value
    first, then lowest `pk`, so jobs of one level run first-in first-out. A cancelled
    entry is blanked and skipped when it surfaces.

    Capacity is taken before the row is written and given back if the write fails, so a
    slot is never promised twice.

    Lock invariant: `_lock` guards `_heap`, `_entries`, `_reserved` and `_closed`;
    `len(_entries) + _reserved <= capacity` holds whenever `_lock` is free (rows returned
    by `recover()` and `returned()` may exceed it: they were accepted before).
    """

    _REMOVED = ""

    def __init__(self, store: JobStore, capacity: int, *, clock: Clock = utcnow) -> None:
        super().__init__(store, capacity, clock=clock)
        self._heap: list[list[int | str]] = []
        self._entries: dict[str, list[int | str]] = {}
        self._reserved = 0
        self._closed = False
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)

    def recover(self, max_attempts: int) -> list[Job]:
        # One process owns a SQLite file, so whatever is running now was left by a dead one.
        taken_back = self.store.reclaim(max_attempts, self._clock(), expired_only=False)
        self.returned(self.store.queued())
        return taken_back

    def submit(self, job: Job, *, announce: Announce | None = None) -> tuple[Job, int]:
        with self._lock:
            if self._closed:
                raise ServiceStoppedError("the generation service is shutting down")
            if len(self._entries) + self._reserved >= self.capacity:
                raise QueueFullError(self.capacity)
            self._reserved += 1
        try:
            written = self.store.insert(job)
            position = self._rank([int(written.priority), written.pk])
            if announce is not None:
                announce(written, position)
        except BaseException:
            with self._lock:
                self._reserved -= 1
            raise
        with self._lock:
            self._reserved -= 1
            self._index(written)
        return written, position

    def claim(self, worker: str, timeout: float | None = None) -> Job | None:
        while (entry := self._pop(timeout)) is not None:
            try:
                job = self.store.claim(str(entry[2]), worker, self._clock())
            except SQLAlchemyError:
                with self._lock:
                    self._push(entry)
                raise
            if job is not None:
                return job
            # Cancelled (or finished) since it was indexed: look at the next one.
        return None

    def returned(self, jobs: Iterable[Job]) -> None:
        with self._lock:
            for job in jobs:
                if job.status is JobStatus.QUEUED and job.id not in self._entries:
                    self._index(job)

    def cancel(self, job_id: str) -> Job | None:
        cancelled = self.store.cancel_queued(job_id, self._clock())
        if cancelled is not None:
            with self._lock:
                entry = self._entries.pop(job_id, None)
                if entry is not None:
                    entry[2] = self._REMOVED
        return cancelled

    def position(self, job: Job) -> int | None:
        with self._lock:
            entry = self._entries.get(job.id)
        return None if entry is None else self._rank(entry[:2])

    def _rank(self, key: list[int | str]) -> int:
        with self._lock:
            return sum(1 for other in self._entries.values() if other[:2] < key)

    def depth_by_priority(self) -> dict[Priority, int]:
        with self._lock:
            counts = Counter(entry[0] for entry in self._entries.values())
        return {priority: counts.get(int(priority), 0) for priority in Priority}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _index(self, job: Job) -> None:
        self._push([int(job.priority), job.pk, job.id])

    def _push(self, entry: list[int | str]) -> None:
        self._entries[str(entry[2])] = entry
        heapq.heappush(self._heap, entry)
        self._not_empty.notify()

    def _pop(self, timeout: float | None) -> list[int | str] | None:
        with self._not_empty:
            while True:
                while self._heap and self._heap[0][2] == self._REMOVED:
                    heapq.heappop(self._heap)
                if self._closed:
                    return None
                if self._heap:
                    entry = heapq.heappop(self._heap)
                    del self._entries[str(entry[2])]
                    return entry
                if not self._not_empty.wait(timeout):
                    return None
