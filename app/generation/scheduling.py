"""The scheduling policy: which queued job starts next. Pure: no threads, no I/O, no clock.

The rule, in one place (every backend must order jobs exactly so):

1. **Effective priority with aging.** A job's effective priority rises one level for every
   `aging_seconds` it has waited, up to HIGH:
   `effective = max(HIGH, priority - floor(waited / aging_seconds))`.
2. **Fair share.** Among jobs of the best effective priority, the owner *least recently
   served* goes first (an owner that has never been served counts as served at 0), so a
   flood from one owner takes turns with everyone else: round-robin, as InvokeAI does.
3. **FIFO.** Then the oldest job (lowest `order`, the row's insertion key) goes first.

So the next job is the one with the smallest key
`(effective_priority, last_served[owner], order)` at the moment of the pick; serving it
sets `last_served[owner]` to a counter that only grows. In SQL, `effective_priority_sql()`
is rule 1 as a portable expression (tested equal on SQLite and PostgreSQL); a claimer
orders by it, then by the owner's last turn (a table `owner_turns(owner, last_served)`
updated in the claiming transaction; 0 when absent), then by the primary key.

`SchedulingIndex` answers "next job at time t" in O(log n) without re-sorting: jobs sit in
per-(priority, owner) FIFO heaps whose heads compete in one heap per effective level,
and a timer heap moves a head up a level when its age crosses the next threshold.
Lazily deleted entries carry a version number; stale ones are skipped when they surface.
"""

from __future__ import annotations

import copy
import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case

from .models import Priority

LEVELS = tuple(int(p) for p in Priority)  # 1 (HIGH) .. 3 (LOW)
TOP = min(LEVELS)
# Rebuild the competition heaps when stale entries outnumber live buckets this much.
COMPACT_FACTOR = 8


def effective_priority(priority: int, waited_seconds: float, aging_seconds: float) -> int:
    """The level a job competes at after waiting `waited_seconds` (lower runs first)."""
    raised = math.floor(max(0.0, waited_seconds) / aging_seconds)
    return max(TOP, priority - raised)


def effective_priority_sql(
    priority: ColumnElement[int],
    waiting_since: ColumnElement[datetime],
    now: datetime,
    aging_seconds: float,
) -> ColumnElement[int]:
    """`effective_priority` as a SQL expression over a row's priority and `created_at`.

    Compares the column with precomputed cut-offs (`now - k x aging`) instead of doing
    date arithmetic in SQL, so it reads the same on every dialect.
    """
    cutoffs = aging_cutoffs(now, aging_seconds)
    return _lifted(priority, waiting_since, lambda name: cutoffs[name])


def effective_priority_sql_bound(
    priority: ColumnElement[int], waiting_since: ColumnElement[datetime]
) -> ColumnElement[int]:
    """`effective_priority_sql` with its cut-offs as bound parameters, for a statement
    built once and executed with `aging_cutoffs(now, aging_seconds)`."""
    return _lifted(priority, waiting_since, lambda name: bindparam(name, type_=waiting_since.type))


def aging_cutoffs(now: datetime, aging_seconds: float) -> dict[str, datetime]:
    """The cut-offs of `effective_priority_sql_bound`: `cutoff_<k>` = now - k x aging."""
    return {
        f"cutoff_{levels}": now - timedelta(seconds=levels * aging_seconds)
        for levels in range(max(LEVELS) - TOP, 0, -1)
    }


def _lifted(
    priority: ColumnElement[int], waiting_since: ColumnElement[datetime], cutoff: Any
) -> ColumnElement[int]:
    raised: list[tuple[ColumnElement[bool], ColumnElement[int] | int]] = []
    for levels in range(max(LEVELS) - TOP, 0, -1):
        lifted = case((priority - levels > TOP, priority - levels), else_=TOP)
        raised.append((waiting_since <= cutoff(f"cutoff_{levels}"), lifted))
    return case(*raised, else_=priority)


def promotion_time(priority: int, enqueued_at: float, level: int, aging: float) -> float:
    """When a job of `priority` enqueued at `enqueued_at` reaches `level`."""
    return enqueued_at + (priority - level) * aging


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A queued job as the scheduler sees it.

    `enqueued_at` (epoch seconds) is when it began waiting: its row's `created_at`, so a
    job requeued after a crash keeps the age it had earned. The index relies on
    `enqueued_at` rising with `order` (as `created_at` does with the primary key), so the
    first job of a (priority, owner) FIFO is also its most aged. `cost` is its size in the
    generator's own unit (see eta.py), used only for forecasts.
    """

    job_id: str
    priority: Priority
    order: int
    owner: str
    enqueued_at: float
    generator: str = ""
    cost: float = 1.0


_Bucket = tuple[int, str]  # (base priority, owner)


class SchedulingIndex:
    """Queued jobs ordered by the policy above. Not thread-safe: `JobQueue` locks it.

    Invariant: the head of every FIFO in `_fifo` is a live entry and is entered, under the
    bucket's current stamp, in exactly one level heap (and in the timer heap unless it is
    at the top level already). A level-heap key may hold an owner's *older* turn: turns
    only grow, so such an entry surfaces early and is re-keyed then, instead of re-keying
    all of an owner's heads each time it is served.
    """

    def __init__(self, aging_seconds: float) -> None:
        if aging_seconds <= 0:
            raise ValueError(f"aging_seconds must be positive, got {aging_seconds}")
        self.aging_seconds = aging_seconds
        self._entries: dict[str, QueueEntry] = {}
        self._fifo: dict[_Bucket, list[tuple[int, str]]] = {}
        self._stamp: dict[_Bucket, int] = {}
        self._stamps = 0
        self._last_served: dict[str, int] = {}
        self._turns = 0
        # Per effective level: (last_served, head order, stamp, bucket) of competing heads.
        self._levels: dict[int, list[tuple[int, int, int, _Bucket]]] = {lv: [] for lv in LEVELS}
        # (when, stamp, bucket): a head moves up one level at `when`.
        self._timers: list[tuple[float, int, _Bucket]] = []
        self._now = -math.inf
        self._pushes = 0  # heap pushes since the last look at stale entries

    # -- changes --------------------------------------------------------------------

    def resume_turns(self, last_served: Mapping[str, int]) -> None:
        """Start from owners' turns as a shared queue stores them (`owner_turns`); call
        before adding any job."""
        if self._entries:
            raise RuntimeError("resume_turns() must come before the first add()")
        self._last_served = dict(last_served)
        self._turns = max(self._last_served.values(), default=0)

    def add(self, entry: QueueEntry, now: float) -> None:
        self._advance(now)
        self._entries[entry.job_id] = entry
        bucket = (int(entry.priority), entry.owner)
        fifo = self._fifo.setdefault(bucket, [])
        previous_head = fifo[0] if fifo else None
        heapq.heappush(fifo, (entry.order, entry.job_id))
        if fifo[0] != previous_head:
            self._register(bucket)

    def remove(self, job_id: str) -> QueueEntry | None:
        """Forget a queued job; None if it is not here."""
        entry = self._entries.pop(job_id, None)
        if entry is not None:
            bucket = (int(entry.priority), entry.owner)
            if self._fifo[bucket][0][1] == job_id:
                self._register(bucket)
        return entry

    def pop(self, now: float) -> QueueEntry | None:
        """Take the job the policy starts next at `now`; None when empty."""
        self._advance(now)
        for level in LEVELS:
            bucket = self._best_at(level)
            if bucket is not None:
                return self._serve(bucket)
        return None

    # -- questions ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    def entries(self) -> list[QueueEntry]:
        return list(self._entries.values())

    def get(self, job_id: str) -> QueueEntry | None:
        return self._entries.get(job_id)

    def last_served(self, owner: str) -> int:
        return self._last_served.get(owner, 0)

    def copy(self) -> SchedulingIndex:
        """An independent copy, for simulating the future without touching the queue."""
        twin = copy.copy(self)
        twin._entries = dict(self._entries)
        twin._fifo = {bucket: list(fifo) for bucket, fifo in self._fifo.items()}
        twin._stamp = dict(self._stamp)
        twin._last_served = dict(self._last_served)
        twin._levels = {level: list(heap) for level, heap in self._levels.items()}
        twin._timers = list(self._timers)
        return twin

    # -- internals ------------------------------------------------------------------

    def _serve(self, bucket: _Bucket) -> QueueEntry:
        _, job_id = heapq.heappop(self._fifo[bucket])
        entry = self._entries.pop(job_id)
        owner = bucket[1]
        self._turns += 1
        self._last_served[owner] = self._turns
        self._register(bucket)
        return entry

    def _best_at(self, level: int) -> _Bucket | None:
        heap = self._levels[level]
        while heap:
            turn, order, stamp, bucket = heap[0]
            if stamp != self._stamp.get(bucket):
                heapq.heappop(heap)
            elif turn != self._last_served.get(bucket[1], 0):  # its owner was served since
                heapq.heapreplace(heap, (self._last_served[bucket[1]], order, stamp, bucket))
            else:
                return bucket
        return None

    def _register(self, bucket: _Bucket) -> None:
        """(Re)enter a bucket's head in the competition at its current level."""
        fifo = self._fifo[bucket]
        while fifo and fifo[0][1] not in self._entries:
            heapq.heappop(fifo)
        if not fifo:
            del self._fifo[bucket], self._stamp[bucket]
            return
        self._enter(bucket)
        if self._pushes > COMPACT_FACTOR * (len(self._fifo) + 16):
            self._pushes = 0
            if self._stale_entries() > COMPACT_FACTOR * (len(self._fifo) + 16):
                self._compact()

    def _enter(self, bucket: _Bucket) -> None:
        self._stamps += 1
        stamp = self._stamp[bucket] = self._stamps
        self._pushes += 1
        head = self._entries[self._fifo[bucket][0][1]]
        priority, owner = bucket
        level = self._level(priority, head.enqueued_at)
        heapq.heappush(self._levels[level], (self.last_served(owner), head.order, stamp, bucket))
        if level > TOP:
            when = promotion_time(priority, head.enqueued_at, level - 1, self.aging_seconds)
            heapq.heappush(self._timers, (when, stamp, bucket))

    def _level(self, priority: int, enqueued_at: float) -> int:
        """`effective_priority` now, computed from the same sums the timers use so that a
        timer that fired always finds its head one level up (no float disagreement)."""
        for level in range(TOP, priority):
            if promotion_time(priority, enqueued_at, level, self.aging_seconds) <= self._now:
                return level
        return priority

    def _advance(self, now: float) -> None:
        """Move heads whose age crossed a threshold up a level. Time never runs back."""
        self._now = max(self._now, now)
        timers = self._timers
        while timers and timers[0][0] <= self._now:
            _, stamp, bucket = heapq.heappop(timers)
            if stamp == self._stamp.get(bucket):
                self._enter(bucket)

    def _stale_entries(self) -> int:
        return sum(map(len, self._levels.values())) + len(self._timers) - 2 * len(self._fifo)

    def _compact(self) -> None:
        """Drop every stale heap entry by entering each live head afresh."""
        self._levels = {level: [] for level in LEVELS}
        self._timers = []
        for bucket in self._fifo:
            self._enter(bucket)
