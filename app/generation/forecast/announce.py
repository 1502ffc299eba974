"""Pushing a queued job's new position and ETA to whoever watches it.

After every forecast the service asks `PositionAnnouncer` to compare each watched job's
slot with the one it last sent, and publishes a `queued` event (`position`,
`eta_seconds`) when the job moved in the queue or its predicted finish shifted by at least
max(MIN_SHIFT_SECONDS, MIN_SHIFT_RATIO x the time still to wait). ETAs that merely count
down are not news: clients count down themselves. Jobs nobody subscribes to are skipped;
their snapshot carries the current figures when someone does.

Ordering rule: a `queued` event is only published under `_lock`, for a job still in the
queue; whoever takes a job out of the queue calls `withdraw()` (which takes `_lock`)
before publishing that job's `started` or `cancelled`. So no `queued` event ever follows
them, however a forecast and a worker interleave.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..events.bus import EventBus, EventType
from .forecaster import Forecast, Slot

MIN_SHIFT_SECONDS = 2.0
MIN_SHIFT_RATIO = 0.1


class PositionAnnouncer:
    def __init__(self, bus: EventBus, is_queued: Callable[[str], bool]) -> None:
        self._bus = bus
        self._is_queued = is_queued
        self._sent: dict[str, Slot] = {}
        self._lock = threading.Lock()

    def sent(self, job_id: str, slot: Slot) -> None:
        """Note a slot already published (with the job's `queued` event at submit)."""
        with self._lock:
            self._sent[job_id] = slot

    def announce(self, forecast: Callable[[], Forecast], now: float) -> int:
        """Publish what changed since the last call; returns how many events went out.

        `forecast` is only called when someone watches a job (forecasts of deep queues
        are not free), and outside the lock, so `withdraw()` never waits for one.
        """
        watched = self._bus.watched()
        if watched == set():
            with self._lock:
                self._sent.clear()  # nobody to tell; a later watcher gets fresh figures
            return 0
        slots = forecast().slots
        with self._lock:
            self._sent = {job_id: s for job_id, s in self._sent.items() if job_id in slots}
            candidates = slots if watched is None else watched.intersection(slots)
            published = 0
            for job_id in candidates:
                slot = slots[job_id]
                previous = self._sent.get(job_id)
                if previous is not None and not moved(previous, slot, now):
                    continue
                if not self._is_queued(job_id):  # taken meanwhile: it says `started` next
                    continue
                self._bus.publish(
                    job_id,
                    EventType.QUEUED,
                    position=slot.position,
                    eta_seconds=round(max(0.0, slot.finish - now), 1),
                )
                self._sent[job_id] = slot
                published += 1
            return published

    def withdraw(self, job_id: str) -> None:
        """The job left the queue: after this returns, no `queued` event for it goes out."""
        with self._lock:
            self._sent.pop(job_id, None)


def moved(before: Slot, after: Slot, now: float) -> bool:
    """Whether the change from `before` to `after` is worth telling the job's watchers."""
    if before.position != after.position:
        return True
    threshold = max(MIN_SHIFT_SECONDS, MIN_SHIFT_RATIO * max(0.0, after.finish - now))
    return abs(after.finish - before.finish) >= threshold
