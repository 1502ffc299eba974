"""The progress event bus: workers publish, subscribers drain their own bounded buffers.

`publish()` never blocks a worker on a subscriber: it appends to each interested
subscriber's buffer under that buffer's lock and returns. A subscriber that falls behind
loses its oldest *droppable* events (progress and queue-position updates, which the next
one supersedes); lifecycle events (`started` and the terminal ones) are never dropped.

Each job's events carry a `seq` that strictly increases; the bus keeps a bounded history
per job so a client that reconnects with the last `seq` it saw can catch up.

With several processes on PostgreSQL, `forward` hands every event published here to the
relay (relay.py), which sends it to the other processes; they `receive()` it into their
own bus, under their own `seq`.

Lock invariant: `EventBus._lock` guards `_seq`, `_history` and `_subscribers`; a
`Subscription._ready` condition guards only that subscription's buffer. Publishers take
the bus lock, then release it before touching any buffer, so no thread ever holds both.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

TERMINAL_EVENTS = frozenset({"succeeded", "failed", "cancelled"})
DROPPABLE_EVENTS = frozenset({"progress", "queued"})


@dataclass(frozen=True)
class Event:
    job_id: str
    seq: int
    type: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    def message(self) -> dict[str, Any]:
        return {"type": self.type, "seq": self.seq, "job_id": self.job_id, **self.data}


class Subscription:
    """One subscriber's view: a bounded buffer of events for the jobs it follows."""

    def __init__(self, job_ids: Iterable[str] | None, capacity: int) -> None:
        self.job_ids: set[str] | None = set(job_ids) if job_ids is not None else None
        self.capacity = capacity
        self.dropped = 0
        self._buffer: deque[Event] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def wants(self, job_id: str) -> bool:
        return self.job_ids is None or job_id in self.job_ids

    def offer(self, event: Event) -> None:
        with self._ready:
            if len(self._buffer) >= self.capacity and event.type in DROPPABLE_EVENTS:
                self.dropped += 1
                return
            if len(self._buffer) >= self.capacity:
                self._drop_oldest_droppable()
            self._buffer.append(event)
            self._ready.notify()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None after `timeout` seconds or once closed and empty."""
        with self._ready:
            if not self._buffer and not self._closed:
                self._ready.wait(timeout)
            return self._buffer.popleft() if self._buffer else None

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def _drop_oldest_droppable(self) -> None:
        for index, queued in enumerate(self._buffer):
            if queued.type in DROPPABLE_EVENTS:
                del self._buffer[index]
                self.dropped += 1
                return


class EventBus:
    def __init__(self, history_per_job: int = 256, jobs_remembered: int = 2000) -> None:
        self.history_per_job = history_per_job
        self.jobs_remembered = jobs_remembered
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}
        self._history: OrderedDict[str, deque[Event]] = OrderedDict()
        self._subscribers: set[Subscription] = set()
        self.forward: Callable[[Event], None] | None = None

    def publish(self, job_id: str, type: str, **data: Any) -> Event:  # noqa: A002
        event = self.receive(job_id, type, data)
        if self.forward is not None:
            self.forward(event)
        return event

    def receive(self, job_id: str, type: str, data: dict[str, Any]) -> Event:  # noqa: A002
        """Deliver an event here without forwarding it (it came from another process)."""
        with self._lock:
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

    def last_seq(self, job_id: str) -> int:
        with self._lock:
            return self._seq.get(job_id, 0)

    def history(self, job_id: str, since: int = 0) -> list[Event]:
        """Remembered events of a job with `seq` greater than `since`, oldest first."""
        with self._lock:
            events = list(self._history.get(job_id, ()))
        return [event for event in events if event.seq > since]

    def watched_jobs(self) -> set[str]:
        """Jobs that some subscriber follows by id."""
        with self._lock:
            subscriptions = list(self._subscribers)
        return set().union(*(sub.job_ids or () for sub in subscriptions))

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
