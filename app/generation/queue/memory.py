"""The in-memory queue of one process: the embedded default (SQLite, one process).

`MemoryQueue` implements the queue contract (queue/contract.py) over a `SchedulingIndex` of the
queued rows, bounded and thread-safe; the rows are the truth, the index only orders them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ..errors import QueueFullError, ServiceStoppedError, TooManyJobsError
from ..job import Job, Priority
from ..scheduling.policy import DEFAULT_AGING_SECONDS, QueueEntry, SchedulingIndex
from ..store.jobs import JobStore
from .contract import JOURNAL_SIZE, Change, JobQueue, Stop, as_datetime, changes_after, entry_of

OWNER_LOCK_STRIPES = 16


class MemoryQueue(JobQueue):
    """The in-memory index. Capacity is taken in two steps so a slot is never promised
    twice: `reserve()` holds a slot while the caller writes the job row, then `put()`
    fills it or `release()` gives it back if the write failed.

    Lock invariant: `_lock` guards `_index`, `_depth`, `_reserved`, `_closed` and
    `version`; `len(_index) + _reserved <= capacity` holds whenever `_lock` is free
    (recovered and returned rows may exceed it: they were accepted before). An owner's
    quota is counted and its row written under that owner's stripe of `_owner_locks`, so
    two submits of one owner cannot both take its last place.
    """

    def __init__(
        self,
        capacity: int,
        *,
        store: JobStore | None = None,
        cost: Callable[[str, dict[str, Any]], float] = lambda generator, params: 1.0,
        aging_seconds: float = DEFAULT_AGING_SECONDS,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._store = store
        self._cost = cost
        self.version = 0  # bumped by every change; forecasts cache on it
        # (version, "put" | "get" | "remove", entry) of the latest changes
        self._journal: deque[tuple[int, str, QueueEntry]] = deque(maxlen=JOURNAL_SIZE)
        self._index = SchedulingIndex(aging_seconds)
        self._depth: Counter[Priority] = Counter()
        self._reserved = 0
        self._closed = False
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        # Striped so that submits of different owners rarely wait for each other.
        self._owner_locks = [threading.Lock() for _ in range(OWNER_LOCK_STRIPES)]

    @property
    def aging_seconds(self) -> float:
        return self._index.aging_seconds

    def reserve(self) -> None:
        """Hold one slot; raise QueueFullError when none is free."""
        with self._lock:
            self._check_room()
            self._reserved += 1

    def check_room(self) -> None:
        """Raise as `reserve()` would, without holding a slot (for quotes)."""
        with self._lock:
            self._check_room()

    def release(self) -> None:
        """Give back a slot taken by `reserve()` that will not be filled."""
        with self._lock:
            self._reserved -= 1

    def admit(self, job: Job, *, share: float, max_queued: int | None = None) -> Job | None:
        store = self._require_store()
        quota: AbstractContextManager[Any] = nullcontext()
        if max_queued is not None:
            quota = self._owner_locks[hash(job.owner) % OWNER_LOCK_STRIPES]
        with quota:
            if max_queued is not None and store.count_queued(job.owner) >= max_queued:
                raise TooManyJobsError(max_queued)
            self.reserve()
            try:
                written = store.insert(job, aging_seconds=self.aging_seconds, share=share)
            except BaseException:
                self.release()
                raise
        if written is None:
            self.release()
        return written

    def claim(
        self, worker: str, *, stop: Stop = lambda: False, timeout: float | None = None
    ) -> Job | None:
        store = self._require_store()
        while (entry := self.get(timeout, stop=stop)) is not None:
            try:
                job = store.claim(entry.job_id, worker, as_datetime(self._clock()))
            except Exception:
                self.put(entry, reserved=False)  # the row is still queued
                raise
            if job is not None:
                return job
            # Cancelled (or taken) since it was indexed: look at the next one.
        return None

    def recover(self, max_attempts: int) -> list[Job]:
        # One process owns a SQLite file, so whatever runs now was left by a dead one.
        store = self._require_store()
        taken = store.reclaim(max_attempts, as_datetime(self._clock()), expired_only=False)
        self.returned(entry_of(job, self._cost) for job in store.queued())
        return taken

    def returned(self, entries: Iterable[QueueEntry]) -> None:
        for entry in entries:
            if entry.job_id not in self:
                self.put(entry, reserved=False)

    def refresh(self, *, force: bool = False) -> None:
        """Nothing to do: this process's index is the whole queue."""

    def put(self, entry: QueueEntry, *, reserved: bool = True) -> None:
        """Add a job; with `reserved=False` (recovery, retries) capacity is not enforced."""
        with self._lock:
            if reserved:
                self._reserved -= 1
            self._index.add(entry)
            self._depth[entry.priority] += 1
            self._changed("put", entry)
            self._not_empty.notify()
        self._on_change()

    def get(
        self, timeout: float | None = None, *, stop: Callable[[], bool] = lambda: False
    ) -> QueueEntry | None:
        """Remove and return the job the policy starts next.

        Returns None when the queue is closed, after `timeout` seconds, or when `stop()`
        is true; `stop` is checked under the lock, and `wake()` makes waiters check again.
        """
        with self._not_empty:
            while True:
                if self._closed or stop():
                    return None
                entry = self._index.pop()
                if entry is not None:
                    self._depth[entry.priority] -= 1
                    self._changed("get", entry)
                    break
                if not self._not_empty.wait(timeout):
                    return None
        self._on_change()
        return entry

    def remove(self, job_id: str) -> bool:
        """Drop a queued job (cancelled); False if it was not in the queue."""
        with self._lock:
            entry = self._index.remove(job_id)
            if entry is None:
                return False
            self._depth[entry.priority] -= 1
            self._changed("remove", entry)
        self._on_change()
        return True

    def wake(self) -> None:
        """Make every waiting `get()` re-check its `stop` condition."""
        with self._lock:
            self._not_empty.notify_all()

    def snapshot(self) -> tuple[int, SchedulingIndex]:
        """(version, a private copy of the index) for forecasting."""
        with self._lock:
            return self.version, self._index.copy()

    def changes_since(self, version: int) -> list[Change] | None:
        with self._lock:
            return changes_after(self._journal, self.version, version)

    def depth_by_priority(self) -> dict[Priority, int]:
        with self._lock:
            return {priority: self._depth[priority] for priority in Priority}

    def key_for(self, owner: str, priority: int, now: float, share: float) -> float:
        with self._lock:
            return self._index.key_for(owner, priority, now, share)

    def close(self) -> None:
        """Wake every waiting `get()` with None; later reservations fail."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def __contains__(self, job_id: object) -> bool:
        with self._lock:
            return job_id in self._index

    def _check_room(self) -> None:
        if self._closed:
            raise ServiceStoppedError("the generation service is shutting down")
        if len(self._index) + self._reserved >= self.capacity:
            raise QueueFullError(self.capacity)

    def _changed(self, kind: str, entry: QueueEntry) -> None:
        self.version += 1
        self._journal.append((self.version, kind, entry))

    def _require_store(self) -> JobStore:
        if self._store is None:
            raise RuntimeError("this queue was built without a job store")
        return self._store
