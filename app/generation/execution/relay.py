"""Events across processes: every process's bus hears every job, wherever it runs.

Each event published on this process's bus is queued for a sender thread, which sends
what has piled up in one transaction of `pg_notify('gs_events', payload)` calls. Every
other process's listener hands it to its own bus with `EventBus.receive()`, so a
WebSocket on any process follows a job running on any other.

Not relayed: `queued` events that only carry a position and ETA. Every process
forecasts the shared queue for its own watchers (forecast/outlook.py), so a position computed
elsewhere would only contradict the local one. A `queued` event with `requeued` (a job
given back to the queue) is relayed: it is a change of state.

NOTIFY's limits, and what we do about them:
- A payload must stay under 8000 bytes: an event whose JSON is larger travels as a
  reference (job id and type) and the receiver rebuilds its data from the job's row.
- Identical payloads in one transaction are delivered once: every payload carries its
  origin and a counter, so none is identical to another.
- Nothing is delivered while a listener is disconnected: after reconnecting, and every
  RESYNC_SECONDS while it is down, the receiver reads the rows of the jobs its subscribers
  follow and publishes what they missed (their terminal event at least), so no socket
  waits forever on an event that was lost.
- A send that fails (the database is down) is retried for lifecycle events; progress
  events that piled up meanwhile are dropped, the next one supersedes them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from ..events.bus import DROPPABLE_EVENTS, Event, EventBus, EventType
from ..job import Job, JobStatus
from ..store.job_writes import skip_flush
from ..store.jobs import JobStore
from ..store.listener import Listener
from .runner import result_summary

log = logging.getLogger(__name__)
KNOWN_EVENTS = frozenset(EventType)

EVENTS_CHANNEL = "gs_events"
MAX_PAYLOAD_BYTES = 7900
OUTBOX_CAPACITY = 10_000
RESYNC_SECONDS = 1.0
RETRY_SECONDS = 0.5
# Under a stream of events, sends are at least this far apart, so each carries what
# piled up meanwhile: one transaction per event cost a quarter of a drained job's CPU.
# The first event after a quiet spell goes at once.
LINGER_SECONDS = 0.01
_NOTIFY = text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) p")


class EventRelay:
    def __init__(
        self,
        engine: Engine,
        store: JobStore,
        bus: EventBus,
        listener: Listener,
        *,
        left_queue: Callable[[str], None] = lambda job_id: None,
    ) -> None:
        """`left_queue(job_id)` is called before a relayed `started` or outcome reaches
        the bus, so that this process stops forecasting a position for that job."""
        self.origin = uuid.uuid4().hex[:12]
        self._left_queue = left_queue
        self._engine = engine
        self._store = store
        self._bus = bus
        self._listener = listener
        self._outbox: deque[Event] = deque()
        self._counter = 0
        self._sent_at = float("-inf")  # monotonic time of the latest send
        self._ready = threading.Condition()
        self._resyncing = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._send_loop, name="gen-relay", daemon=True)
        listener.on(EVENTS_CHANNEL, self._received)
        listener.on_reconnect(self.resync)

    def start(self) -> None:
        self._bus.forward = self.forward
        self._thread.start()

    def stop(self) -> None:
        """Send what is queued (while the database answers), then stop."""
        self._bus.forward = None
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join(5)

    def forward(self, event: Event) -> None:
        if event.type == EventType.QUEUED and not event.data.get("requeued"):
            return
        with self._ready:
            if len(self._outbox) >= OUTBOX_CAPACITY:
                _drop_one_droppable(self._outbox)
            self._outbox.append(event)
            self._ready.notify()

    def resync(self) -> None:
        """Publish what local subscribers missed while notifications did not arrive."""
        with self._resyncing:
            for job_id in self._bus.unfinished(self._bus.watched()):
                try:
                    job = self._store.get(job_id)
                except SQLAlchemyError:
                    return
                if job is not None:
                    self._catch_up(job)

    def _catch_up(self, job: Job) -> None:
        history = self._bus.history(job.id)
        last = history[-1] if history else None
        kind, data = event_from_row(job)
        if kind == EventType.QUEUED or (last is not None and last.is_terminal):
            return
        if kind == EventType.PROGRESS and last is not None and last.type == EventType.PROGRESS:
            if data["percent"] <= last.data.get("percent", 0):
                return  # the row lags behind the live events this bus already has
        self._deliver(job.id, kind, data)

    def _received(self, payload: str) -> None:
        message = json.loads(payload)
        if message["o"] == self.origin:
            return
        if message["t"] not in KNOWN_EVENTS:  # from a newer release, mid rolling deploy
            log.debug("ignoring a %r event of job %s", message["t"], message["j"])
            return
        kind, data = message["t"], message.get("d")
        if data is None:  # sent by reference: too large for a notification
            job = self._store.get(message["j"])
            if job is None:
                return
            # The job as its row says it is now, as an event of its own kind: the data
            # rebuilt from the row fits that kind, not necessarily the one sent.
            kind, data = event_from_row(job)
        self._deliver(message["j"], kind, data)

    def _deliver(self, job_id: str, kind: EventType | str, data: dict[str, Any]) -> None:
        if kind not in DROPPABLE_EVENTS:
            self._left_queue(job_id)
        self._bus.receive(job_id, kind, data)

    def _send_loop(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                if not self._listener.connected:
                    self.resync()
            elif not self._send(batch) and not self._stopping:
                self._requeue_lifecycle(batch)
                with self._ready:
                    self._ready.wait(RETRY_SECONDS)

    def _take(self) -> list[Event] | None:
        """What piled up; [] after RESYNC_SECONDS of quiet; None once stopped and empty."""
        with self._ready:
            if not self._outbox and not self._stopping:
                self._ready.wait(RESYNC_SECONDS)
            if not self._outbox:
                return None if self._stopping else []
            linger = self._sent_at + LINGER_SECONDS - time.monotonic()
            if linger > 0:
                self._ready.wait_for(lambda: self._stopping, linger)
            batch = list(self._outbox)
            self._outbox.clear()
            return batch

    def _send(self, batch: list[Event]) -> bool:
        self._sent_at = time.monotonic()
        payloads = [self._payload(event) for event in batch]
        try:
            with self._engine.begin() as connection:
                skip_flush(connection)
                connection.execute(_NOTIFY, {"channel": EVENTS_CHANNEL, "payloads": payloads})
        except SQLAlchemyError as error:
            log.warning("could not relay %d events to other processes: %s", len(batch), error)
            return False
        return True

    def _requeue_lifecycle(self, batch: list[Event]) -> None:
        kept = [event for event in batch if event.type not in DROPPABLE_EVENTS]
        with self._ready:
            self._outbox.extendleft(reversed(kept))

    def _payload(self, event: Event) -> str:
        self._counter += 1
        message = {"o": self.origin, "n": self._counter, "j": event.job_id, "t": event.type}
        encoded = json.dumps(message | {"d": event.data}, default=str, separators=(",", ":"))
        if len(encoded.encode()) <= MAX_PAYLOAD_BYTES:
            return encoded
        return json.dumps(message, separators=(",", ":"))


def event_from_row(job: Job) -> tuple[EventType, dict[str, Any]]:
    """The event that states where a job is now, built from its row."""
    if job.status is JobStatus.SUCCEEDED:
        return EventType.SUCCEEDED, {"result": result_summary(job)}
    if job.status is JobStatus.FAILED:
        return EventType.FAILED, {"error": job.error}
    if job.status is JobStatus.CANCELLED:
        return EventType.CANCELLED, {}
    if job.status is JobStatus.RUNNING:
        return EventType.PROGRESS, job.progress.event_data()
    return EventType.QUEUED, {}


def _drop_one_droppable(outbox: deque[Event]) -> None:
    for index, event in enumerate(outbox):
        if event.type in DROPPABLE_EVENTS:
            del outbox[index]
            return
    outbox.popleft()
