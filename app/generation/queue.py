"""The bounded, thread-safe, in-memory queue: an index over queued job rows.

The order is the scheduling policy's (scheduling.py: aging priority, then fair turns
between owners, then FIFO); this module adds capacity, blocking and thread safety.

Capacity is taken in two steps so a slot is never promised twice: `reserve()` holds a
slot while the caller writes the job row, then `put()` fills it or `release()` gives it
back if the write failed.

Lock invariant: `_lock` guards `_index`, `_depth`, `_reserved`, `_closed` and `version`;
`len(_index) + _reserved <= capacity` holds whenever `_lock` is free (recovery at start
may exceed it: rows accepted before a restart are never dropped).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from .errors import QueueFullError, ServiceStoppedError
from .models import Priority
from .scheduling import QueueEntry, SchedulingIndex

DEFAULT_AGING_SECONDS = 60.0
# Changes kept for forecasts that follow the queue change by change (forecast.py).
JOURNAL_SIZE = 1024


class JobQueue:
    def __init__(
        self,
        capacity: int,
        *,
        aging_seconds: float = DEFAULT_AGING_SECONDS,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
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

    def put(self, entry: QueueEntry, *, reserved: bool = True) -> None:
        """Add a job; with `reserved=False` (recovery, retries) capacity is not enforced."""
        with self._lock:
            if reserved:
                self._reserved -= 1
            self._index.add(entry, self._clock())
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
                entry = self._index.pop(self._clock())
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

    def changes_since(self, version: int) -> list[tuple[int, str, QueueEntry]] | None:
        """The changes after `version`, oldest first; None if the journal no longer
        reaches back that far."""
        with self._lock:
            if version == self.version:
                return []
            if not self._journal or self._journal[0][0] > version + 1:
                return None
            # Versions in the journal are consecutive: the wanted ones are its last few.
            size = len(self._journal)
            return [self._journal[n] for n in range(size - (self.version - version), size)]

    def rank(self, priority: Priority, order: int) -> int:
        """How many queued jobs would start before a job with this priority and order."""
        key = [int(priority), order]
        with self._lock:
            return sum(1 for other in self._entries.values() if other[:2] < key)

    def depth_by_priority(self) -> dict[Priority, int]:
        with self._lock:
            return {priority: self._depth[priority] for priority in Priority}

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
