"""What one WebSocket follows: its jobs, the last `seq` sent for each, the messages owed.

A feed turns event-bus events into protocol messages (docs/websockets.md). It never
sends anything itself: the socket's handler thread asks it for messages and sends them,
so a worker publishing an event never waits for a client.

Snapshot without a gap or a repeat: the feed follows a job on the bus *before* it reads
the job's last `seq` and then its row, and it passes on only events whose `seq` is above
the last one sent. Status events are published after their row is committed, so an event
with a `seq` at or below the snapshot's is already reflected in the snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from flask import request, url_for

from ..generation import ANONYMOUS, GenerationService, Job
from ..generation.events.bus import DROPPABLE_EVENTS, Event, EventType, Subscription
from .links import links
from .serialize import file_path, job_json

Message = dict[str, Any]

# Events one socket may have waiting before progress updates are dropped (never lifecycle).
BUFFERED_EVENTS = 64
# Events handed to the handler in one go, so it looks at its client's input between batches.
BATCH_EVENTS = 64


class Feed:
    """The jobs of `owner` (None: anyone's) one socket follows. `update_interval`: after
    passing on progress or queue updates, hold further ones back for that many seconds
    (sending the newest then); lifecycle events never wait."""

    def __init__(
        self,
        service: GenerationService,
        *,
        owner: str | None = None,
        capacity: int = BUFFERED_EVENTS,
        update_interval: float = 0.0,
    ) -> None:
        self._service = service
        self._owner = owner
        self._bus = service.bus
        self._subscription: Subscription = self._bus.subscribe((), capacity=capacity)
        self._sent: dict[str, int] = {}
        self._update_interval = update_interval
        self._updates_from = 0.0

    @property
    def following(self) -> int:
        """How many jobs this feed still follows (a job is dropped once it has finished)."""
        return len(self._sent)

    def follow(self, job_id: str, since: int | None = None) -> list[Message]:
        """Follow a job; returns the messages that bring the client up to date.

        With `since` (the last `seq` the client saw) and a history that still holds every
        event after it, those events; otherwise a snapshot of the job. Raises
        `JobNotFoundError` for an unknown job.
        """
        self._bus.follow(self._subscription, job_id)
        try:
            seq = self._bus.last_seq(job_id)
            job = self._service.get(job_id, owner=self._owner)
        except Exception:
            self._bus.unfollow(self._subscription, job_id)
            raise
        missed = self._bus.missed(job_id, since) if since else None
        if missed is not None and _replay_reaches(job, missed):
            self._sent[job_id] = since or 0
            return self._pass_on(missed)
        self._sent[job_id] = seq
        if job.status.is_terminal:
            self.unfollow(job_id)
        return [{"type": "snapshot", "seq": seq, "job_id": job_id, "job": job_json(job)}]

    def unfollow(self, job_id: str) -> None:
        self._bus.unfollow(self._subscription, job_id)
        self._sent.pop(job_id, None)

    def wait(self, timeout: float) -> list[Message]:
        """Messages for new events, waiting up to `timeout` seconds for the first one.
        Returns [] on timeout or when `wake()` was called."""
        first = self._subscription.get(timeout, updates_from=self._updates_from)
        if first is None:
            return []
        events = [first]
        while len(events) < BATCH_EVENTS and (more := self._subscription.get(0)) is not None:
            events.append(more)
        if self._update_interval and any(e.type in DROPPABLE_EVENTS for e in events):
            self._updates_from = time.monotonic() + self._update_interval
        return self._pass_on(events)

    def wake(self) -> None:
        """Make `wait()` return now (thread-safe: the socket's reader and shutdown call it)."""
        self._subscription.wake()

    @property
    def dropped(self) -> int:
        """Progress updates dropped because this socket's client read too slowly."""
        return self._subscription.dropped

    def close(self) -> None:
        self._bus.unsubscribe(self._subscription)
        self._sent.clear()

    def _pass_on(self, events: Iterable[Event]) -> list[Message]:
        messages = []
        for event in events:
            last = self._sent.get(event.job_id)
            if last is None or event.seq <= last:
                continue  # no longer followed, or already in the snapshot or sent
            self._sent[event.job_id] = event.seq
            messages.append(event_message(event, self._owner or ANONYMOUS))
            if event.is_terminal:
                self.unfollow(event.job_id)
        return messages


def event_message(event: Event, owner: str) -> Message:
    """The protocol message of an event; its urls signed for `owner` (links.py)."""
    message = event.message()
    kind, job_id = event.type, event.job_id
    if kind == EventType.SUCCEEDED:
        url = url_for("api.get_result", job_id=job_id)
        signed = links().sign(url, owner, job_id, "zip", datetime.now(UTC))
        message["result"] = {"url": signed, **message.get("result", {})}
    elif kind == EventType.OUTPUT:
        url = request.root_path + file_path(job_id, message["name"])
        message["url"] = links().sign(url, owner, job_id, "file:" + message["name"])
    elif kind == EventType.PREVIEW:
        url = url_for("api.get_preview", job_id=job_id)
        message["url"] = links().sign(url, owner, job_id, "preview") + f"&v={message['version']}"
    return message


def _replay_reaches(job: Job, missed: list[Event]) -> bool:
    """Whether replaying `missed` leaves the client where the job is: a finished job's
    replay must include its outcome (the history of an old job may not have it)."""
    return not job.status.is_terminal or any(event.is_terminal for event in missed)
