"""The scheduling policy: which queued job starts next. Pure: no threads, no I/O, no clock.

Every job gets one number when it is admitted, its **key**, and never another: the next
job is the queued one with the smallest `(key, order)`. So the order is an index order
(the PostgreSQL claim reads one index entry, queue/claim_postgres.py), a job requeued
after a crash or a drain keeps its place, and nothing is recomputed as time passes.

    key   = start + offset(priority)          offset = (priority - HIGH) x aging_seconds
    start = now                               if its owner has no queued job of that priority
          = max(now, tail + share)            otherwise, where tail = that job's start

1. **Aging as an offset.** A NORMAL job's key is an aging period later than a HIGH job
   admitted at the same moment, a LOW job's two periods later. Keys are moments, so a
   job waits only for jobs whose keys are smaller: a LOW job admitted at t is overtaken
   only by jobs admitted before t + 2 x aging (HIGH) or t + aging (NORMAL), never by later
   ones: nothing starves.
2. **Fair share (start-time fair queuing).** An owner's jobs of one priority are spaced
   out by `share`, the job's predicted run time on one worker: its n-th queued job starts
   (in key terms) where its previous one would end if its jobs ran back to back on one
   worker. One owner's flood therefore stretches into the future while another owner's
   single job is keyed at `now` and goes in between: owners interleave in proportion to
   their work. An owner with nothing queued at a priority starts afresh at `now`, so work
   done on idle capacity is never held against it.
3. **FIFO.** Equal keys go in admission order (`order`, the row's primary key).

`now` is the database's clock when the row is written (the same for every machine), and
the tail is read from the queued rows in the admitting transaction: on PostgreSQL the
group commit reads them and calls `admission_key` (store/admission_postgres.py); SQLite's
one-row INSERT computes its SQL twin (store/job_writes.admission_key_sql).
tests/test_scheduling_sql.py holds both equal to `SchedulingIndex.key_for`.

`SchedulingIndex` is the in-memory queue of one process: a heap on `(key, order)`, and,
per (priority, owner), the largest queued key, to price what a new job would get.
"""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass

from ..job import Priority

DEFAULT_AGING_SECONDS = 60.0
LEVELS = tuple(int(p) for p in Priority)  # 1 (HIGH) .. 3 (LOW)
TOP = min(LEVELS)
# Rebuild the heaps when stale entries outnumber live ones this much.
COMPACT_FACTOR = 4


def offset(priority: int, aging_seconds: float) -> float:
    """How much later than a HIGH job a job of `priority` admitted at once is keyed."""
    return (priority - TOP) * aging_seconds


def admission_key(
    now: float, priority: int, aging_seconds: float, tail_key: float | None, share: float
) -> float:
    """The key of a job admitted at `now`. `tail_key`: the largest key among its owner's
    queued jobs of the same priority (None if there are none); `share`: its predicted run
    seconds on one worker (>= 0)."""
    fresh = now + offset(priority, aging_seconds)
    return fresh if tail_key is None else max(fresh, tail_key + share)


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A queued job as the scheduler sees it.

    `key` is its scheduling key (above); `order` breaks ties (its row's primary key).
    `enqueued_at` (epoch seconds) is when it was admitted, used by forecasts to replay
    arrivals; `cost` is its size in the generator's own unit (see forecast/run_times.py).
    """

    job_id: str
    priority: Priority
    order: int
    owner: str
    enqueued_at: float
    generator: str = ""
    cost: float = 1.0
    key: float = 0.0

    @property
    def rank(self) -> tuple[float, int]:
        """What the policy compares: smaller starts first."""
        return (self.key, self.order)


_Bucket = tuple[int, str]  # (priority, owner)


class SchedulingIndex:
    """Queued jobs in policy order. Not thread-safe: the queue that holds it locks it.

    Invariant: every live entry is in `_heap` once under its rank, and its key is in its
    bucket's `_tails` heap (negated); entries removed stay in both until they surface and
    are skipped (`_entries` says who is live). `_live` counts each bucket's live entries,
    and a bucket's `_tails` goes when its last one does, so a drained index (a forecast's
    end state, copied for every quote) holds nothing of the jobs it served.
    """

    def __init__(self, aging_seconds: float) -> None:
        if aging_seconds <= 0:
            raise ValueError(f"aging_seconds must be positive, got {aging_seconds}")
        self.aging_seconds = aging_seconds
        self._entries: dict[str, QueueEntry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._tails: dict[_Bucket, list[tuple[float, str]]] = {}
        self._live: dict[_Bucket, int] = {}

    # -- changes --------------------------------------------------------------------

    def add(self, entry: QueueEntry) -> None:
        """Queue `entry` (a job removed before may come back, under another key: heap
        entries are live only while they match their job's current key)."""
        self._entries[entry.job_id] = entry
        heapq.heappush(self._heap, (entry.key, entry.order, entry.job_id))
        bucket = (int(entry.priority), entry.owner)
        heapq.heappush(self._tails.setdefault(bucket, []), (-entry.key, entry.job_id))
        self._live[bucket] = self._live.get(bucket, 0) + 1

    def remove(self, job_id: str) -> QueueEntry | None:
        """Forget a queued job; None if it is not here."""
        entry = self._entries.pop(job_id, None)
        if entry is None:
            return None
        self._left(entry)
        if len(self._heap) > COMPACT_FACTOR * (len(self._entries) + 16):
            self._compact()
        return entry

    def pop(self) -> QueueEntry | None:
        """Take the job the policy starts next; None when empty."""
        heap = self._heap
        while heap:
            key, _, job_id = heapq.heappop(heap)
            entry = self._entries.get(job_id)
            if entry is not None and entry.key == key:  # else stale: removed, or re-keyed
                del self._entries[job_id]
                self._left(entry)
                return entry
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

    def tail_key(self, owner: str, priority: int) -> float | None:
        """The largest key among `owner`'s queued jobs of `priority`; None if none."""
        tails = self._tails.get((priority, owner))
        while tails and self._stale(tails[0]):
            heapq.heappop(tails)
        if not tails:
            self._tails.pop((priority, owner), None)
            return None
        return -tails[0][0]

    def key_for(self, owner: str, priority: int, now: float, share: float) -> float:
        """The key a job admitted now would get (for quotes and expected arrivals)."""
        tail = self.tail_key(owner, priority)
        return admission_key(now, priority, self.aging_seconds, tail, share)

    def copy(self) -> SchedulingIndex:
        """An independent copy, for simulating the future without touching the queue."""
        twin = copy.copy(self)
        twin._entries = dict(self._entries)
        twin._heap = list(self._heap)
        twin._tails = {bucket: list(tails) for bucket, tails in self._tails.items()}
        twin._live = dict(self._live)
        return twin

    # -- internals ------------------------------------------------------------------

    def _stale(self, tail: tuple[float, str]) -> bool:
        """Whether a tail entry is of a job that left, or came back under another key
        (a new priority: ops/steering.py)."""
        entry = self._entries.get(tail[1])
        return entry is None or entry.key != -tail[0]

    def _left(self, entry: QueueEntry) -> None:
        bucket = (int(entry.priority), entry.owner)
        self._live[bucket] -= 1
        if not self._live[bucket]:
            del self._live[bucket], self._tails[bucket]

    def _compact(self) -> None:
        """Drop every stale heap entry (after many removals out of turn)."""
        live = self._entries.values()
        self._heap = [(entry.key, entry.order, entry.job_id) for entry in live]
        heapq.heapify(self._heap)
        self._tails = {}
        for entry in live:
            bucket = (int(entry.priority), entry.owner)
            self._tails.setdefault(bucket, []).append((-entry.key, entry.job_id))
        for tails in self._tails.values():
            heapq.heapify(tails)
