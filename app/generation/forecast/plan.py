"""The forecast's simulation, kept alive so that a queue change does not replay it all.

`Plan` plays the scheduling policy forward over a copy of the queue, as forecast/forecaster.py
describes, and keeps what it needs to go on afterwards: every pick it made (the picked
job's key decides), and its state after the last queued job (the index, left holding
only expected arrivals, the workers' predicted free times, the stream of expected
arrivals). Then:

- **A job is added** (a submit): it changes no pick before its own, since until then it
  only competes and loses. So its slot is the first pick whose key it beats, scanning
  from just after the last pick of its own FIFO (same priority and owner: its key is at
  least theirs, so it cannot start before those); if it beats none, the simulation goes
  on from its end state until it picks the new job. A flood from one owner costs
  O(log n) per job: the scan starts at the end. A job that overtakes (a HIGH job, another
  owner's first) also gets its exact slot, but every pick after it is now wrong: the
  plan is `broken`, and the forecaster replays it on next use.
- **A worker takes one of the first picks**: it is dropped, positions count without it.
  Workers claiming at the same moment may report their claims in either order, so a take
  among the next `workers` real picks is not a surprise.
- Anything else (a cancellation, a worker taking a job further down) breaks the plan.

What a plan does not see: a job added late does not change whether expected arrivals
fitted in the queue before its own pick (a queue within one job of full), and the plan's
clock stays at `made_at` (the forecaster replays plans older than MAX_AGE_SECONDS).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..scheduling.policy import QueueEntry, SchedulingIndex

EXPECTED_PREFIX = "~expected"


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a queued job stands: its position, predicted start and finish (epoch s)."""

    position: int
    start: float
    finish: float


@dataclass(frozen=True, slots=True)
class Pick:
    """One step of the simulation: who was picked at `start`."""

    entry: QueueEntry
    start: float
    finish: float
    rank: int  # real (not expected) picks before this one
    expected: bool


class _Arrivals:
    """A cursor on a stream of expected arrivals that forks share (read once, buffered)."""

    def __init__(self, stream: Iterator[QueueEntry], buffer: list[QueueEntry], at: int) -> None:
        self._stream, self._buffer, self._at = stream, buffer, at

    def peek(self) -> QueueEntry | None:
        while len(self._buffer) <= self._at:
            entry = next(self._stream, None)
            if entry is None:
                return None
            self._buffer.append(entry)
        return self._buffer[self._at]

    def advance(self) -> None:
        self._at += 1

    def fork(self) -> _Arrivals:
        return _Arrivals(self._stream, self._buffer, self._at)


class Plan:
    """A simulation of the queue from `made_at`; not thread-safe (the forecaster locks)."""

    def __init__(
        self,
        index: SchedulingIndex,
        now: float,
        busy_until: Iterable[float],
        workers: int,
        run_seconds: Callable[[QueueEntry], float],
        *,
        expected: Iterable[QueueEntry] = (),
        capacity: int | None = None,
        version: int = 0,
        until: str | None = None,
    ) -> None:
        """`index` is consumed. `busy_until`: predicted ends of running jobs; fewer
        than one worker plans as one (a pool that is draining or not started)."""
        workers = max(1, workers)
        ends = sorted(max(now, end) for end in busy_until)
        self._free = (ends + [now] * workers)[:workers]
        heapq.heapify(self._free)
        self.made_at = now
        self.version = version
        self.broken = False
        self._index = index
        self._run = run_seconds
        self._capacity = capacity
        self._arrivals = _Arrivals(iter(expected), [], 0)
        self.picks: list[Pick] = []
        self._head = 0  # picks before it were taken by workers
        self._passed = 0  # real picks before the head
        self._early: list[int] = []  # ranks of picks taken while ahead of the head
        self._real = 0  # real picks so far
        self._slots: dict[str, Pick] = {}  # real jobs not yet taken
        self._last_of_fifo: dict[tuple[int, str], int] = {}  # last real pick per FIFO
        self._waiting = len(index)  # real jobs not yet picked
        while self._waiting and (until is None or until not in self._slots):
            self._step()

    # -- questions ------------------------------------------------------------------

    def slot(self, job_id: str) -> Slot | None:
        pick = self._slots.get(job_id)
        return None if pick is None else self._slot(pick)

    def slots(self) -> dict[str, Slot]:
        """Every queued job's slot, in pick order."""
        return {job_id: self._slot(pick) for job_id, pick in self._slots.items()}

    @property
    def next_start(self) -> float | None:
        """When the first queued job is predicted to start, freeing a queue slot."""
        first = next(iter(self._slots.values()), None)
        return None if first is None else first.start

    def quote(self, entry: QueueEntry, now: float) -> Slot:
        """The slot `entry`, not in the plan, would get if it were added at `now`."""
        beaten = self._first_beaten(entry)
        if beaten is not None:
            pick = self.picks[beaten]
            start = max(pick.start, now)
            return Slot(self._position(pick.rank), start, start + self._run(entry))
        # Every queued job is picked already: only expected arrivals can go first.
        index, free, arrivals = self._index.copy(), list(self._free), self._arrivals.fork()
        start, finish = _run_until(entry, now, index, free, arrivals, self._capacity, self._run)
        return Slot(len(self._slots), start, finish)

    # -- changes --------------------------------------------------------------------

    def add(self, entry: QueueEntry, now: float) -> None:
        """A job joined the queue at `now` (a job planned already is left as it is)."""
        if entry.job_id in self._slots:
            return
        if self._waiting or self._first_beaten(entry) is not None:
            self.broken = True
        else:
            self._go_on(entry, now)

    def take(self, job_id: str) -> None:
        """A worker took `job_id` off the queue."""
        pick = self._slots.get(job_id)
        if pick is None or self._position(pick.rank) >= len(self._free):
            self.broken = True
            return
        del self._slots[job_id]
        insort(self._early, pick.rank)
        while self._head < len(self.picks):
            head = self.picks[self._head]
            if not head.expected:
                if head.entry.job_id in self._slots:
                    break
                self._early.remove(head.rank)  # the smallest: taken, now passed
                self._passed += 1
            self._head += 1

    # -- internals ------------------------------------------------------------------

    def _slot(self, pick: Pick) -> Slot:
        return Slot(self._position(pick.rank), pick.start, pick.finish)

    def _position(self, rank: int) -> int:
        """Real picks still waiting before the one of `rank`."""
        return rank - self._passed - bisect_left(self._early, rank)

    def _first_beaten(self, entry: QueueEntry) -> int | None:
        """The first pick `entry` would have won, had it been queued; None if none."""
        fifo = (int(entry.priority), entry.owner)
        start = max(self._head, self._last_of_fifo.get(fifo, -1) + 1)
        rank = entry.rank
        for number in range(start, len(self.picks)):
            if rank < self.picks[number].entry.rank:
                return number
        return None

    def _go_on(self, entry: QueueEntry, now: float) -> None:
        """Add `entry` to the end state and simulate until it is picked."""
        self._free = [max(now, free) for free in self._free]
        heapq.heapify(self._free)
        self._index.add(entry)
        self._waiting += 1
        while self._waiting:
            self._step()

    def _step(self) -> None:
        entry, start, finish = _pick(
            self._index, self._free, self._arrivals, self._capacity, self._run
        )
        expected = entry.job_id.startswith(EXPECTED_PREFIX)
        pick = Pick(entry, start, finish, self._real, expected)
        number = len(self.picks)
        self.picks.append(pick)
        if not expected:
            self._slots[entry.job_id] = pick
            self._last_of_fifo[(int(entry.priority), entry.owner)] = number
            self._real += 1
            self._waiting -= 1


def _pick(
    index: SchedulingIndex,
    free: list[float],
    arrivals: _Arrivals,
    capacity: int | None,
    run_seconds: Callable[[QueueEntry], float],
) -> tuple[QueueEntry, float, float]:
    """One step: the earliest free worker takes the job the policy picks then."""
    start = heapq.heappop(free)
    arrival = arrivals.peek()
    while arrival is not None and arrival.enqueued_at <= start:
        if capacity is None or len(index) < capacity:
            index.add(arrival)
        arrivals.advance()
        arrival = arrivals.peek()
    entry = index.pop()
    assert entry is not None  # only called while a real job waits
    finish = start + run_seconds(entry)
    heapq.heappush(free, finish)
    return entry, start, finish


def _run_until(
    entry: QueueEntry,
    now: float,
    index: SchedulingIndex,
    free: list[float],
    arrivals: _Arrivals,
    capacity: int | None,
    run_seconds: Callable[[QueueEntry], float],
) -> tuple[float, float]:
    """(start, finish) of `entry` added at `now` to an end state that holds no real job."""
    free[:] = [max(now, at) for at in free]
    heapq.heapify(free)
    index.add(entry)
    while True:
        picked, start, finish = _pick(index, free, arrivals, capacity, run_seconds)
        if picked.job_id == entry.job_id:
            return start, finish
