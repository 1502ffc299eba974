"""The bounded, in-memory priority index over queued job rows.

Entries are `[priority, order, job_id]` in a heap (huey's MemoryStorage shape): lowest
priority value first, then lowest `order` (the row's insertion key), so jobs of one
level run first-in first-out. Cancelling removes an entry lazily: the entry's job id is
blanked and the heap skips it when it surfaces.

Capacity is taken in two steps so a slot is never promised twice: `reserve()` holds a
slot while the caller writes the job row, then `put()` fills it or `release()` gives it
back if the write failed.

Lock invariant: `_lock` guards `_heap`, `_entries`, `_reserved` and `_closed`;
`len(_entries) + _reserved <= capacity` holds whenever `_lock` is free.
"""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from typing import NamedTuple

from .errors import QueueFullError, ServiceStoppedError
from .models import Priority

_REMOVED = ""


class Ticket(NamedTuple):
    """A job's place in the queue, as `get()` hands it out (and `put()` can take it back)."""

    job_id: str
    priority: Priority
    order: int


class JobQueue:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._heap: list[list[int | str]] = []
        self._entries: dict[str, list[int | str]] = {}
        self._reserved = 0
        self._closed = False
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)

    def reserve(self) -> None:
        """Hold one slot; raise QueueFullError when none is free."""
        with self._lock:
            if self._closed:
                raise ServiceStoppedError("the generation service is shutting down")
            if len(self._entries) + self._reserved >= self.capacity:
                raise QueueFullError(self.capacity)
            self._reserved += 1

    def release(self) -> None:
        """Give back a slot taken by `reserve()` that will not be filled."""
        with self._lock:
            self._reserved -= 1

    def put(self, job_id: str, priority: Priority, order: int, *, reserved: bool = True) -> None:
        """Add a job; with `reserved=False` (recovery at start) capacity is not enforced."""
        entry: list[int | str] = [int(priority), order, job_id]
        with self._lock:
            if reserved:
                self._reserved -= 1
            self._entries[job_id] = entry
            heapq.heappush(self._heap, entry)
            self._not_empty.notify()

    def get(self, timeout: float | None = None) -> Ticket | None:
        """Remove and return the next job; None when closed or after `timeout` seconds."""
        with self._not_empty:
            while True:
                while self._heap and self._heap[0][2] == _REMOVED:
                    heapq.heappop(self._heap)
                if self._closed:
                    return None
                if self._heap:
                    priority, order, job_id = heapq.heappop(self._heap)
                    del self._entries[str(job_id)]
                    return Ticket(str(job_id), Priority(priority), int(order))
                if not self._not_empty.wait(timeout):
                    return None

    def remove(self, job_id: str) -> bool:
        """Drop a queued job (cancelled); False if it was not in the queue."""
        with self._lock:
            entry = self._entries.pop(job_id, None)
            if entry is None:
                return False
            entry[2] = _REMOVED
            return True

    def position(self, job_id: str) -> int | None:
        """How many queued jobs will start before this one; None if it is not queued."""
        with self._lock:
            entry = self._entries.get(job_id)
            if entry is None:
                return None
            key = entry[:2]
            return sum(1 for other in self._entries.values() if other[:2] < key)

    def rank(self, priority: Priority, order: int) -> int:
        """How many queued jobs would start before a job with this priority and order."""
        key = [int(priority), order]
        with self._lock:
            return sum(1 for other in self._entries.values() if other[:2] < key)

    def depth_by_priority(self) -> dict[Priority, int]:
        with self._lock:
            counts = Counter(entry[0] for entry in self._entries.values())
        return {priority: counts.get(int(priority), 0) for priority in Priority}

    def close(self) -> None:
        """Wake every waiting `get()` with None; later reservations fail."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        with self._lock:
            return job_id in self._entries
