"""The progress event bus: workers publish, subscribers drain their own bounded buffers.

`publish()` never blocks a worker on a subscriber: it appends to each interested
subscriber's buffer under that buffer's lock and returns. Progress and queue-position
updates are *droppable*: a later one supersedes them. So a newer update replaces one of
the same job still waiting in a buffer (a subscriber that falls behind sends the latest,
not a backlog), and a full buffer loses its oldest droppable event. Lifecycle events
(`started` and the terminal ones) are never dropped.

Each job's events carry a `seq` that strictly increases; the bus keeps a bounded history
per job so a client that reconnects with the last `seq` it saw can catch up. Counters
live in memory: after a restart a job's events start again from 1.

A job's plain `queued` events (position updates) all come before its `started`, however
the threads and processes that publish them interleave: the bus drops one that would
follow `started` (only a `queued` event marked `requeued` puts a job back in line).

With several processes on PostgreSQL, `forward` hands every event published here to the
relay (execution/relay.py), which sends it to the other processes; they `receive()` it into their
own bus, under their own `seq`.

To show a job and then its changes without a gap or a repeat, subscribe first, then read
`last_seq()` and the job, and skip buffered events whose `seq` is not above that number.

Lock invariant: `EventBus._lock` guards `_seq`, `_started`, `_history`, `_subscribers`,
`forward` and every
subscription's `job_ids`; a `Subscription._ready` condition guards only that
subscription's buffer and flags. Publishers take the bus lock, then release it before
touching any buffer, so no thread ever holds both.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """What a job event says happened (its `type` on the WebSocket)."""

    QUEUED = "queued"  # position and ETA, or `requeued`: back in line
    STARTED = "started"
    PROGRESS = "progress"
    OUTPUT = "output"  # a file landed: it can be fetched before the job ends
    PREVIEW = "preview"  # the run's preview image was replaced
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_EVENTS = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})
DROPPABLE_EVENTS = frozenset({EventType.PROGRESS, EventType.QUEUED, EventType.PREVIEW})
LIFECYCLE_EVENTS = TERMINAL_EVENTS | {EventType.STARTED}


@dataclass(frozen=True)
class Event:
    job_id: str
    seq: int
    type: EventType
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    def message(self) -> dict[str, Any]:
        return {"type": self.type, "seq": self.seq, "job_id": self.job_id, **self.data}


class Subscription:
    """One subscriber's view: a bounded buffer of events for the jobs it follows."""

    def __init__(self, job_ids: Iterable[str] | None, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.job_ids: set[str] | None = set(job_ids) if job_ids is not None else None
        self.capacity = capacity
        self.dropped = 0
        self._buffer: deque[Event] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._woken = False
        self._holding_until = 0.0  # while a get() holds updates back: until when

    def wants(self, job_id: str) -> bool:
        return self.job_ids is None or job_id in self.job_ids

    def offer(self, event: Event) -> None:
        """Buffer an event, or let it replace the update it supersedes. When full, the
        oldest droppable event makes room; a droppable event that finds only lifecycle
        events ahead of it is the one dropped."""
        with self._ready:
            if event.type in DROPPABLE_EVENTS and self._supersede(event):
                return
            if len(self._buffer) >= self.capacity and not self._drop_oldest_droppable():
                if event.type in DROPPABLE_EVENTS:
                    self.dropped += 1
                    return
            self._buffer.append(event)
            # A reader holding updates back wakes by itself when the hold ends: waking it
            # for each one would cost a thread switch per update for nothing.
            if event.type not in DROPPABLE_EVENTS or self._holding_until <= time.monotonic():
                self._ready.notify()

    def get(self, timeout: float | None = None, *, updates_from: float = 0.0) -> Event | None:
        """The next event; None after `timeout` seconds, after `wake()`, or once closed
        and empty. Until the `time.monotonic()` instant `updates_from`, droppable events
        are held back (newer ones replace them meanwhile) unless a lifecycle event waits
        behind them: that is how a reader paces updates without delaying outcomes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            self._holding_until = updates_from
            while not (self._closed or self._woken or self._takeable(updates_from)):
                wait = self._seconds_to_wait(deadline, updates_from)
                if wait is not None and wait <= 0:
                    break
                self._ready.wait(wait)
            self._holding_until = 0.0
            self._woken = False
            if self._buffer and (self._closed or self._takeable(updates_from)):
                return self._buffer.popleft()
            return None

    def wake(self) -> None:
        """Make a waiting (or the next) `get()` return at once, even with nothing buffered:
        the reader has something else to look at (input from its client, a shutdown)."""
        with self._ready:
            self._woken = True
            self._ready.notify_all()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def _takeable(self, updates_from: float) -> bool:
        return bool(self._buffer) and (
            updates_from <= time.monotonic()
            or any(event.type not in DROPPABLE_EVENTS for event in self._buffer)
        )

    def _seconds_to_wait(self, deadline: float | None, updates_from: float) -> float | None:
        now = time.monotonic()
        limits = [deadline - now] if deadline is not None else []
        if updates_from > now:  # updates offered meanwhile do not notify: look again then
            limits.append(updates_from - now)
        return min(limits) if limits else None

    def _supersede(self, event: Event) -> bool:
        """Replace the job's last waiting event if it is an update of the same kind (only
        the last: replacing one behind a lifecycle event would reorder the job's events)."""
        for index in range(len(self._buffer) - 1, -1, -1):
            waiting = self._buffer[index]
            if waiting.job_id == event.job_id:
                if waiting.type != event.type:
                    return False
                self._buffer[index] = event
                self.dropped += 1
                return True
        return False

    def _drop_oldest_droppable(self) -> bool:
        for index, queued in enumerate(self._buffer):
            if queued.type in DROPPABLE_EVENTS:
                del self._buffer[index]
                self.dropped += 1
                return True
        return False


class EventBus:
    def __init__(self, history_per_job: int = 256, jobs_remembered: int = 2000) -> None:
        self.history_per_job = history_per_job
        self.jobs_remembered = jobs_remembered
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}
        self._started: set[str] = set()  # jobs whose last state change was `started`
        self._history: OrderedDict[str, deque[Event]] = OrderedDict()
        self._subscribers: set[Subscription] = set()
        self.forward: Callable[[Event], None] | None = None

    def publish(self, job_id: str, type: EventType, **data: Any) -> Event | None:  # noqa: A002
        """Deliver an event to this process's subscribers (and forward it to the other
        processes, if any); None if it was dropped as out of order."""
        event = self.receive(job_id, type, data)
        forward = self.forward
        if event is not None and forward is not None:
            forward(event)
        return event

    def receive(
        self,
        job_id: str,
        type: EventType | str,  # noqa: A002 - a string when it came from another process
        data: dict[str, Any],
    ) -> Event | None:
        """Deliver an event here without forwarding it (it came from another process);
        ValueError for a type this version does not know."""
        type = EventType(type)  # noqa: A001
        with self._lock:
            if type == EventType.QUEUED and not data.get("requeued"):
                if job_id in self._started:
                    return None
            elif type in LIFECYCLE_EVENTS:
                self._started.add(job_id)
            elif type == EventType.QUEUED:
                self._started.discard(job_id)
            seq = self._seq.get(job_id, 0) + 1
            self._seq[job_id] = seq
            event = Event(job_id, seq, type, data)
            self._remember(event)
            targets = [sub for sub in self._subscribers if sub.wants(job_id)]
        for subscription in targets:
            subscription.offer(event)
        return event

    def subscribe(
        self, job_ids: Iterable[str] | None = None, *, capacity: int = 64
    ) -> Subscription:
        """Follow `job_ids` (None: every job). Unsubscribe when done."""
        subscription = Subscription(job_ids, capacity)
        with self._lock:
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)
        subscription.close()

    def follow(self, subscription: Subscription, job_id: str) -> None:
        """Add a job to what a subscription receives, from the next event published on."""
        with self._lock:
            if subscription.job_ids is not None:
                subscription.job_ids.add(job_id)

    def unfollow(self, subscription: Subscription, job_id: str) -> None:
        """Stop delivering a job's events (some may already sit in the buffer)."""
        with self._lock:
            if subscription.job_ids is not None:
                subscription.job_ids.discard(job_id)

    def last_seq(self, job_id: str) -> int:
        with self._lock:
            return self._seq.get(job_id, 0)

    def history(self, job_id: str, since: int = 0) -> list[Event]:
        """Remembered events of a job with `seq` greater than `since`, oldest first."""
        with self._lock:
            events = list(self._history.get(job_id, ()))
        return [event for event in events if event.seq > since]

    def watched(self) -> set[str] | None:
        """The job ids some subscriber follows; None when one follows every job."""
        followed: set[str] = set()
        with self._lock:  # it guards every subscription's job_ids (follow/unfollow)
            for subscription in self._subscribers:
                if subscription.job_ids is None:
                    return None
                followed.update(subscription.job_ids)
        return followed

    def unfinished(self, job_ids: set[str] | None) -> list[str]:
        """Of `job_ids` (None: every job this bus remembers), those whose last
        remembered event is not an outcome."""
        with self._lock:
            remembered = [
                job_id
                for job_id, events in self._history.items()
                if job_ids is None or job_id in job_ids
                if not (events and events[-1].is_terminal)
            ]
            unknown = [job_id for job_id in job_ids or () if job_id not in self._history]
        return remembered + unknown

    def missed(self, job_id: str, since: int) -> list[Event] | None:
        """Every event after `since`, oldest first; None when the history cannot say,
        because it has forgotten some of them or `since` comes from another life of
        the process (it is ahead of the job's counter)."""
        with self._lock:
            last = self._seq.get(job_id, 0)
            events = list(self._history.get(job_id, ()))
        if since > last or (since < last and (not events or events[0].seq > since + 1)):
            return None
        return [event for event in events if event.seq > since]

    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def _remember(self, event: Event) -> None:
        history = self._history.get(event.job_id)
        if history is None:
            history = self._history[event.job_id] = deque(maxlen=self.history_per_job)
        self._history.move_to_end(event.job_id)
        history.append(event)
        while len(self._history) > self.jobs_remembered:
            forgotten, events = self._history.popitem(last=False)
            # A live job keeps its counter so its seq never restarts.
            if events and events[-1].is_terminal:
                self._seq.pop(forgotten, None)
                self._started.discard(forgotten)
